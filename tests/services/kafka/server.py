"""Apache Kafka 4.x in KRaft mode, one node, on free 127.0.0.1 ports.

The jars come from Maven Central through ``pom.xml`` beside this file
(``mvn dependency:copy-dependencies``), cached under
``~/.cache/replicator/kafka/<pom digest>/`` and prepared under a file lock so
that parallel sessions resolve them once. The broker runs on the machine's
Java 17: ``kafka.tools.StorageTool format --standalone`` writes the KRaft
metadata directory, then ``kafka.Kafka server.properties`` serves. Readiness
is the broker's own "Kafka Server started" line plus a real ApiVersions
round trip on the client port. ``stop()`` signals the process group by PID.

``python -m tests.services.kafka.server prepare`` resolves the jars (./dev).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.services.process import ServerProcess, ServiceError, free_port

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
JARS_ENV = "REPLICATOR_KAFKA_JARS"
#: Bound on `mvn` resolving ~45 jars (~45 MB) from a cold ~/.m2.
RESOLVE_LIMIT_S = 900
#: A graceful broker shutdown (controlled shutdown, log flush) takes seconds.
STOP_LIMIT_S = 30.0

# C1 only and the serial collector: the shared CI machine has two cores, and a
# test broker needs neither peak throughput nor a parallel GC.
JVM_OPTS = [
    "-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-XX:ActiveProcessorCount=2", "-Djava.awt.headless=true",
]  # fmt: skip

_LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def _cache_root() -> Path:
    return Path(os.environ.get("REPLICATOR_CACHE", Path.home() / ".cache" / "replicator"))


def kafka_version() -> str:
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


def jars_dir() -> Path:
    """Where the jars of this pom live once prepared (keyed by the pom's digest)."""
    explicit = os.environ.get(JARS_ENV)
    if explicit:
        return Path(explicit)
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    return _cache_root() / "kafka" / f"{kafka_version()}-{digest}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare_jars() -> Path:
    """Resolve the broker's jars once (cached, under a lock); return their directory."""
    target = jars_dir()
    stamp = target / ".complete"
    if stamp.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) not found: cannot resolve the Kafka broker jars")
    with _locked(target.parent / ".lock"):
        if stamp.exists():  # another session finished while we waited
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        argv = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
        argv.append(f"-DoutputDirectory={partial}")
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=RESOLVE_LIMIT_S, check=False
        )
        if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            tail = (done.stdout + done.stderr)[-2000:]
            raise ServiceError(f"mvn could not resolve the Kafka jars:\n{tail}")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        stamp.write_text(kafka_version() + "\n")
    return target


def _cluster_id() -> str:
    # Kafka's Uuid text form: URL-safe base64 of 16 bytes, without padding.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def api_versions_ok(port: int, timeout: float = 2.0) -> bool:
    """One ApiVersions v0 request/response on the client port: the broker serves."""
    client_id = b"replicator-probe"
    header = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(header)) + header)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        body = _recv_exact(sock, size)
    correlation, error = struct.unpack(">ih", body[:6])
    return bool(correlation == 7 and error == 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("broker closed the connection")
        buf += part
    return buf


class KafkaBroker:
    """One KRaft node (broker + controller) with its data under ``workdir``."""

    def __init__(
        self, workdir: Path, *, sasl_users: dict[str, str] | None = None, **overrides: str
    ):
        self.jars = prepare_jars()
        self.java = shutil.which("java")
        if self.java is None:
            raise ServiceError("java not found: the Kafka broker needs Java 17")
        self.workdir = workdir
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        # A second listener with SASL/PLAIN when users are given (secrets tests).
        self.sasl_port = free_port() if sasl_users else None
        self.sasl_bootstrap = f"127.0.0.1:{self.sasl_port}" if sasl_users else None
        self.sasl_users = dict(sasl_users or {})
        self.data = workdir / "data"
        self.properties = workdir / "server.properties"
        self.properties.write_text(self._properties(overrides))
        (workdir / "log4j2.properties").write_text(_LOG4J)
        self.starts = 0
        self.format_seconds = self._format()
        self.process: ServerProcess | None = None
        self.start_seconds = self.start()

    def _properties(self, overrides: dict[str, str]) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data),
            # Topics are created on purpose (as in production): a typo in a
            # topic name must not silently create an empty topic.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "log.retention.check.interval.ms": "1000",
        }
        props.update(self._sasl_properties())
        props.update(overrides)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _sasl_properties(self) -> dict[str, str]:
        if not self.sasl_users:
            return {}
        users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
        jaas = f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        }

    def _java(self, *args: str) -> list[str]:
        assert self.java is not None
        log4j = f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}"
        return [self.java, *JVM_OPTS, log4j, "-cp", f"{self.jars}/*", *args]

    def _format(self) -> float:
        began = time.monotonic()
        argv = self._java("kafka.tools.StorageTool", "format", "-t", _cluster_id())
        argv += ["-c", str(self.properties), "--standalone"]
        output = ""
        for _ in range(2):  # once more: a JVM start on a loaded shared machine can fail
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
            if done.returncode == 0:
                return time.monotonic() - began
            output = (done.stdout + done.stderr)[-2000:]
            shutil.rmtree(self.data, ignore_errors=True)
        raise ServiceError(f"kafka-storage format failed:\n{output}")

    def start(self) -> float:
        """Start (or restart) the broker on the same ports and data; seconds to ready."""
        began = time.monotonic()
        self.starts += 1
        log = self.workdir / f"broker-{self.starts}.log"
        self.process = ServerProcess(self._java("kafka.Kafka", str(self.properties)), log)
        self.process.wait_ready(self._ready, f"Kafka {kafka_version()} broker")
        return time.monotonic() - began

    def _ready(self) -> bool:
        assert self.process is not None
        started = "Kafka Server started" in self.process.log_path.read_text(errors="replace")
        return started and api_versions_ok(self.port)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (graceful) the broker's process group, or SIGKILL it at once."""
        if self.process is not None:
            self.process.stop(timeout=STOP_LIMIT_S, kill=kill)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*.log")))


def main(argv: list[str]) -> int:
    if argv[1:] == ["prepare"]:
        began = time.monotonic()
        where = prepare_jars()
        took = time.monotonic() - began
        print(f"Kafka {kafka_version()} jars in {where} ({took:.1f} s)", file=sys.stderr)
        return 0
    print("usage: python -m tests.services.kafka.server prepare", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
