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
import functools
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
import uvloop

from replicator.config import Settings
from replicator.errors import ReplicatorError
from replicator.events import ChangeEvent
from replicator.heartbeat import beating
from replicator.metrics import Telemetry, serve
from replicator.notify import Notifier
from replicator.pipeline.backfill import Backfill
from replicator.pipeline.lanes import Lane, open_lane
from replicator.pipeline.service import Service
from replicator.pipeline.tracking import Observer
from replicator.sources.factory import Feed, make_source
from replicator.store.peer import Peer, close_peers, open_peers
from replicator.store.subtrees import SubtreeCache

log = structlog.get_logger("replicator.daemon")
service_log = structlog.get_logger("replicator.service")

#: Period of the STATUS= line (per peer RPO) sent to systemd.
STATUS_EVERY_SECONDS = 10.0
#: Threads of the default executor (blocking file and fsync calls).
IO_THREADS = 32
#: After a failed reconcile, try again this much later (doubling up to the max).
RECONCILE_RETRY_SECONDS = 30.0
RECONCILE_RETRY_MAX_SECONDS = 1800.0


class LogObserver(Observer):
    """The daemon's: failures and recoveries as log lines."""

    def failed(self, lane: str | None, event: ChangeEvent, exc: BaseException) -> None:
        if lane is None:
            service_log.error("job failed", key=event.key, error=f"{type(exc).__name__}: {exc}")

    def retrying(self, lane: str, op: str, exc: BaseException, delay: float) -> None:
        service_log.warning(
            "peer failed, retrying",
            destination=lane,
            operation=op,
            error=f"{type(exc).__name__}: {exc}",
            retry_in_seconds=round(delay, 3),
        )

    def back(self, lane: str) -> None:
        service_log.info("peer is back", destination=lane)


class StartupError(ReplicatorError):
    """A start-up check failed (a peer unreachable, incompatible, ...)."""

    exit_code = 2


def run(settings: Settings, notifier: Notifier | None = None) -> int:
    """Run the daemon until a signal; the process exit code."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(Daemon(settings, notifier or Notifier()).main())


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
        feed = make_source(self.settings, self.telemetry)
        peers = await self._open_peers()
        lanes: list[Lane] = []
        try:
            try:
                await feed.source.start()
            except ReplicatorError as exc:  # brokers unreachable, topics missing, ...
                raise StartupError(f"start-up check failed: {exc}") from None
            for peer in peers:
                cfg = self.settings.service
                lanes.append(
                    await open_lane(
                        peer,
                        self.settings.store,
                        cfg.retry_max_seconds,
                        large_object_size=cfg.large_object_size,
                    )
                )
            service = self._service(feed, lanes)
            return await self._serve(feed, service, peers)
        finally:
            await feed.close()
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
            # Format 3: the segments its last reconcile could not read (status names them).
            state = getattr(peer.manifests, "state", None)
            if state is not None:
                self.telemetry.set_damaged_segments(peer.name, functools.partial(_skipped, state))
        return peers

    def _service(self, feed: Feed, lanes: list[Lane]) -> Service:
        self.telemetry.set_source_backlog(feed.source.backlog)
        return Service(
            feed.source,
            feed.opener,
            lanes,
            self.telemetry,
            self.settings.service.model_copy(
                update={"max_in_flight": self.settings.small_in_flight()}
            ),
            params=self.settings.chunking.params(),
            window_size=feed.window_size,
            etag_is_digest=feed.etag_is_digest,
            observer=LogObserver(),
            subtrees=SubtreeCache(self.settings.store.cache_dir),
        )

    async def _serve(self, feed: Feed, service: Service, peers: list[Peer]) -> int:
        self.telemetry.set_ready(True)
        self.notifier.ready("reconciling the tree against every peer")
        background = [
            asyncio.create_task(self._watchdog()),
            asyncio.create_task(self._status_lines()),
            asyncio.create_task(self._reconciles(feed, service, peers)),
        ]
        if self.settings.service.heartbeat_interval_seconds > 0:
            background.append(
                asyncio.create_task(beating(self.settings, self.telemetry.heartbeat, peers))
            )
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

    async def _reconciles(self, feed: Feed, service: Service, peers: list[Peer]) -> None:
        """The start-up reconcile (a directory), the service, one per reported gap."""
        if feed.reconcile_at_start:
            await self._reconcile(feed, peers, "start-up")
        service.start()
        self.notifier.status("watching " + feed.describe)
        while True:
            await feed.gaps.wait()
            feed.gaps.clear()
            await self._reconcile(feed, peers, "gap")

    def _retry_reconcile(self, feed: Feed) -> None:
        """Another reconcile later; the delay doubles while they keep failing
        (a whole-tree walk is not something to repeat every few seconds)."""
        asyncio.get_running_loop().call_later(self._reconcile_delay, feed.gaps.set)
        self._reconcile_delay = min(RECONCILE_RETRY_MAX_SECONDS, 2 * self._reconcile_delay)

    async def _reconcile(self, feed: Feed, peers: list[Peer], why: str) -> None:
        """The backfill over the source; on failure, another attempt later."""
        started = time.monotonic()
        origin = feed.origin()
        job = Backfill(origin, peers, self.settings.chunking.params(), self.settings.store)
        try:
            summary = await job.run()
        except (ReplicatorError, OSError) as exc:
            log.error("reconcile failed, retrying later", reason=why, error=str(exc))
            self._retry_reconcile(feed)
            return
        finally:
            with contextlib.suppress(Exception):
                await origin.close()
        if summary.errors:
            # A peer that failed here (down, full) has no event to retry:
            # only another reconcile brings it what it missed.
            self._retry_reconcile(feed)
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
        # A Kafka gap waits for this; errors (a peer down) are retried later,
        # while the other peers go on with the events after the gap.
        feed.settled.set()


def _skipped(state: Any) -> list[tuple[str, str]]:
    """(segment, why) of a format 3 peer's unreadable segments."""
    return [(n, why.removeprefix(f"segment {n}: ")) for n, why in state.skipped]
