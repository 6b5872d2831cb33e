"""The daemon's lifecycle: start-up checks -> READY -> work -> drain -> exit.

Start-up opens every peer (store config, capability probe); a peer that
fails ends the process with exit code 2 and the reason, before anything is
written. Then the source starts watching, the metrics endpoint answers,
systemd hears READY=1, and the tree is reconciled against every peer (the
same backfill as ``replicator backfill``), so what changed while the
daemon was down reaches every peer; after that the pipeline service runs.
Whenever the source reports a gap (inotify overflow, watch limit) the tree
is reconciled again.

SIGTERM or SIGINT: stop taking changes, finish what was taken within
``service.drain_timeout_seconds``, exit 0. A second signal exits at once
(code 1): the store's write order (packs -> index -> manifest) keeps every
peer consistent at any instant, so a hard stop loses only work not done.

uvloop runs the event loop, chosen by a loop factory (as uvicorn does),
never by a global policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import structlog
import uvloop

from replicator.config import FsSource, Settings
from replicator.errors import ConfigError, ReplicatorError
from replicator.metrics import Telemetry, serve
from replicator.notify import Notifier
from replicator.origins.fs import FsOrigin
from replicator.pipeline.backfill import Backfill
from replicator.pipeline.lanes import Lane, open_lane
from replicator.pipeline.service import Service
from replicator.sources.fswatch import DirectorySource
from replicator.store.peer import Peer, close_peers, open_peers

log = structlog.get_logger("replicator.daemon")

#: Period of the STATUS= line (per peer RPO) sent to systemd.
STATUS_EVERY_SECONDS = 10.0
#: Threads of the default executor (blocking file and fsync calls).
IO_THREADS = 32
#: After a failed reconcile, try again this much later (doubling up to the max).
RECONCILE_RETRY_SECONDS = 30.0
RECONCILE_RETRY_MAX_SECONDS = 1800.0


class StartupError(ReplicatorError):
    """A start-up check failed (a peer unreachable, incompatible, ...)."""

    exit_code = 2


def run(settings: Settings, notifier: Notifier | None = None) -> int:
    """Run the daemon until a signal; the process exit code."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(Daemon(settings, notifier or Notifier()).main())


def make_source(settings: Settings) -> DirectorySource:
    if not isinstance(settings.source, FsSource):
        raise ConfigError(
            'source.type: `replicator run` watches a directory (type = "fs"); S3 '
            "buckets are followed through their change events (the Kafka source)"
        )
    return DirectorySource(settings.source)


class Daemon:
    def __init__(self, settings: Settings, notifier: Notifier) -> None:
        self.settings = settings
        self.notifier = notifier
        names = [d.name for d in settings.destinations]
        targets = {d.name: d.rpo_target_seconds for d in settings.destinations}
        self.telemetry = Telemetry(names, targets)
        self._stop = asyncio.Event()
        self._signals = 0
        self._reconcile_delay = RECONCILE_RETRY_SECONDS

    async def main(self) -> int:
        self._install_signals()
        # Blocking calls (file reads, fsyncs of peer writes, stats) run in the
        # default executor; its stock size (CPUs + 4) lets a few slow fsyncs
        # stall every read behind them. They wait on the disk, not the CPU.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="io")
        )
        address = self.settings.service.metrics_address
        try:
            server = await serve(self.telemetry, address)
        except OSError as exc:
            msg = f"service.metrics_address: cannot listen on {address}: {exc}"
            raise StartupError(msg) from None
        try:
            return await self._with_endpoint()
        finally:
            await server.close()
            self.notifier.close()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting at once", signal=sig.name)
            os._exit(1)
        log.info("signal: draining", signal=sig.name)
        self._stop.set()

    async def _with_endpoint(self) -> int:
        source = make_source(self.settings)
        peers = await self._open_peers()
        lanes: list[Lane] = []
        try:
            await source.start()
            for peer in peers:
                lanes.append(
                    await open_lane(
                        peer, self.settings.store, self.settings.service.retry_max_seconds
                    )
                )
            service = self._service(source, lanes)
            return await self._serve(source, service, peers)
        finally:
            await source.close()
            for lane in lanes:
                await lane.close()
            await close_peers(peers)

    async def _open_peers(self) -> list[Peer]:
        try:
            peers = await open_peers(self.settings, create=True)
        except (ReplicatorError, OSError) as exc:
            raise StartupError(f"start-up check failed: {exc}") from None
        for peer in peers:
            self.telemetry.set_peer_up(peer.name, True)
        return peers

    def _service(self, source: DirectorySource, lanes: list[Lane]) -> Service:
        self.telemetry.set_source_backlog(source.backlog)
        return Service(
            source,
            source.open,
            lanes,
            self.telemetry,
            self.settings.service,
            params=self.settings.chunking.params(),
            window_size=FsOrigin.window_size,
            etag_is_digest=True,
        )

    async def _serve(self, source: DirectorySource, service: Service, peers: list[Peer]) -> int:
        self.telemetry.set_ready(True)
        self.notifier.ready("reconciling the tree against every peer")
        background = [
            asyncio.create_task(self._watchdog()),
            asyncio.create_task(self._status_lines()),
            asyncio.create_task(self._reconciles(source, service, peers)),
        ]
        try:
            await self._stop.wait()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        return await self._drain(service)

    async def _drain(self, service: Service) -> int:
        timeout = self.settings.service.drain_timeout_seconds
        self.notifier.stopping(f"draining (up to {timeout:g} s)")
        self.telemetry.set_ready(False, "stopping")
        started = time.monotonic()
        drained = await service.drain(timeout)
        left = service.held()
        log.info(
            "stopped" if drained else "stopped with changes left for the next start",
            drained=drained,
            left=left,
            seconds=round(time.monotonic() - started, 3),
        )
        return 0

    async def _watchdog(self) -> None:
        period = self.notifier.watchdog_seconds
        if period is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(period)

    async def _status_lines(self) -> None:
        """Each peer's RPO and backlog in ``systemctl status`` (STATUS=)."""
        if not self.notifier.enabled:
            return
        while True:
            await asyncio.sleep(STATUS_EVERY_SECONDS)
            view = self.telemetry.peer_view()
            self.notifier.status(
                "; ".join(
                    f"{name}: RPO {rpo:.1f} s, {n} pending" for name, (rpo, n, _) in view.items()
                )
            )

    async def _reconciles(
        self, source: DirectorySource, service: Service, peers: list[Peer]
    ) -> None:
        """The start-up reconcile, then the service, then one per reported gap."""
        await self._reconcile(source, peers, "start-up")
        service.start()
        self.notifier.status("watching " + str(source.root))
        while True:
            await source.gaps.wait()
            source.gaps.clear()
            await self._reconcile(source, peers, "gap")

    def _retry_reconcile(self, source: DirectorySource) -> None:
        """Another reconcile later; the delay doubles while they keep failing
        (a whole-tree walk is not something to repeat every few seconds)."""
        asyncio.get_running_loop().call_later(self._reconcile_delay, source.gaps.set)
        self._reconcile_delay = min(RECONCILE_RETRY_MAX_SECONDS, 2 * self._reconcile_delay)

    async def _reconcile(self, source: DirectorySource, peers: list[Peer], why: str) -> None:
        """The backfill over the source; on failure, another attempt later."""
        started = time.monotonic()
        origin = FsOrigin(source.root, source.bucket)
        job = Backfill(origin, peers, self.settings.chunking.params(), self.settings.store)
        try:
            summary = await job.run()
        except (ReplicatorError, OSError) as exc:
            log.error("reconcile failed, retrying later", reason=why, error=str(exc))
            self._retry_reconcile(source)
            return
        finally:
            with contextlib.suppress(Exception):
                await origin.close()
        if summary.errors:
            # A peer that failed here (down, full) has no event to retry:
            # only another reconcile brings it what it missed.
            self._retry_reconcile(source)
        else:
            self._reconcile_delay = RECONCILE_RETRY_SECONDS
        # A reconcile with errors (an unreadable directory, a refused mass
        # deletion) is not a quiet success: say so, with what went wrong.
        report = log.warning if summary.errors else log.info
        report(
            "reconciled",
            reason=why,
            objects=summary.objects,
            replicated=summary.replicated,
            removed=summary.removed,
            errors=summary.errors,
            error_samples=summary.error_samples[:5],
            seconds=round(time.monotonic() - started, 3),
        )
