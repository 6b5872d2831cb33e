"""What the command line imports and does before a command runs (start-up
cost counts on every run: docs/performance.md). Figures are printed by the
benchmarks, never asserted here."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from replicator.cli import main
from replicator.commands import COMMANDS, load

#: Never needed by a directory-to-directory backfill.
NOT_FOR_BACKFILL = (
    "aiobotocore",
    "botocore",
    "aiokafka",
    "prometheus_client",
    "structlog",
    "rich",
    "replicator.daemon",
    "replicator.bench",
    "replicator.store.backends.s3",
    # The configuration is read without pydantic (only a [kafka] table uses it).
    "pydantic",
    "replicator.config_kafka",
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )


def test_help_imports_no_command() -> None:
    """``replicator --help`` prints the list from the summaries alone."""
    done = _python(
        "import json, sys\n"
        "from replicator.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('pydantic', 'replicator.pipeline', 'replicator.bench', 'replicator.config')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))\n"
    )
    assert done.returncode == 0, done.stderr
    *help_lines, loaded = done.stdout.splitlines()
    assert json.loads(loaded) == []
    for name in COMMANDS:
        assert any(line.split()[:1] == [name] for line in help_lines), name


def test_help_reads_as_if_every_command_were_loaded() -> None:
    """Each summary is its command's own first line; the list is click's."""
    commands = {name: load(name) for name in COMMANDS}
    for name, command in commands.items():
        assert COMMANDS[name].summary == command.get_short_help_str(10_000), name
    plain = click.Group(main.name, commands=commands, params=main.params, help=main.help)
    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).output == runner.invoke(plain, ["--help"]).output


#: Run as the real program (arguments from sys.argv); reports at exit.
_PROGRAM = """
import atexit, gc, json, sys
unwanted = tuple(json.loads(sys.argv[1]))
def report():
    loaded = sorted(m for m in sys.modules if m.startswith(unwanted))
    state = {"frozen": gc.get_freeze_count(), "gc": gc.isenabled(), "loaded": loaded}
    print(json.dumps(state), file=sys.stderr)
atexit.register(report)
from replicator.cli import main
sys.argv = ["replicator", *sys.argv[2:]]
main()
"""


def _fs_config(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(bytes([i]) * 5000)
    cfg = tmp_path / "replicator.toml"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{src}"\n\n'
        f'[[destinations]]\nname = "a"\ntype = "fs"\npath = "{tmp_path / "peer"}"\n\n'
        f'[store]\ncache_dir = "{tmp_path / "cache"}"\n'
    )
    return cfg


def test_backfill_as_the_program(tmp_path: Path) -> None:
    """A directory backfill loads no S3, Kafka, metrics or daemon code, and
    its start-up objects are frozen out of the collector, which runs again."""
    argv = ["backfill", "--config", str(_fs_config(tmp_path)), "--json"]
    done = _python(_PROGRAM, json.dumps(NOT_FOR_BACKFILL), *argv)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["replicated"] == 3
    state = json.loads(done.stderr.splitlines()[-1])
    print(state)
    assert state["loaded"] == []
    assert state["gc"] is True
    assert state["frozen"] > 10_000


def test_a_test_invoking_the_group_keeps_its_collector() -> None:
    """Only the program freezes: arguments given by a caller leave it be."""
    before = gc.get_freeze_count()
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    assert gc.get_freeze_count() == before
    assert gc.isenabled()


def test_check_config_loads_no_daemon_logging(tmp_path: Path) -> None:
    """``check-config`` shares a module with ``run`` but not its logging set-up
    (structlog, and rich through it) or the daemon."""
    unwanted = [
        *("structlog", "rich", "replicator.daemon", "aiobotocore", "aiokafka", "pydantic"),
        # The metrics endpoint's server: check-config only parses its address.
        *("aiohttp", "prometheus_client"),
    ]
    argv = ["check-config", "--config", str(_fs_config(tmp_path))]
    done = _python(_PROGRAM, json.dumps(unwanted), *argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("configuration ok")
    assert json.loads(done.stderr.splitlines()[-1])["loaded"] == []


def test_status_without_a_daemon_loads_no_http_server(tmp_path: Path) -> None:
    """``status`` is a client of the daemon's endpoint (urllib): the server
    side (aiohttp, prometheus_client) is not loaded to parse its address."""
    cfg = _fs_config(tmp_path)
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg.write_text(cfg.read_text() + f'\n[service]\nmetrics_address = "127.0.0.1:{port}"\n')
    unwanted = ["aiohttp", "prometheus_client", "pydantic", "replicator.daemon"]
    done = _python(_PROGRAM, json.dumps(unwanted), "status", "--json", "--config", str(cfg))
    assert done.returncode == 2, done.stderr  # nothing answered: exit 2, one line
    assert json.loads(done.stderr.splitlines()[-1])["loaded"] == []


#: Classes replicator defined while the program ran, reported at exit.
_CLASSES = """
import atexit, dataclasses, json, sys
def report():
    defined = [
        (name, cls.__name__, cls.__dataclass_params__.init)
        for name, module in list(sys.modules.items()) if name.startswith("replicator")
        for cls in vars(module).values()
        if isinstance(cls, type) and cls.__module__ == name and dataclasses.is_dataclass(cls)
    ]
    print(json.dumps(defined), file=sys.stderr)
atexit.register(report)
from replicator.cli import main
sys.argv = ["replicator", *sys.argv[1:]]
main()
"""


def test_backfill_defines_its_classes_as_records(tmp_path: Path) -> None:
    """A stdlib ``@dataclass`` compiles ~6 methods when it is defined (~1 ms
    each class, every run); ``replicator.records.record`` compiles one. Every
    class a backfill (first copy and no-op) defines is a record: a new one on
    this path should be ``@record`` too (docs/performance.md, "boot")."""
    argv = ["backfill", "--config", str(_fs_config(tmp_path)), "--json"]
    for run in ("first copy", "no-op"):
        done = _python(_CLASSES, *argv)
        assert done.returncode == 0, done.stderr
        defined = json.loads(done.stderr.splitlines()[-1])
        print(run, len(defined), "classes")
        assert len(defined) > 30
        assert [f"{module}.{name}" for module, name, dataclass in defined if dataclass] == []
