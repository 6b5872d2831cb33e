"""The daemon's HTTP endpoint (aiohttp): ``/metrics``, ``/healthz``, ``/readyz``, ``/status``.

- ``/metrics``: the Prometheus exposition (OpenMetrics when the scraper asks).
- ``/healthz``: 200 while the process serves requests (liveness).
- ``/readyz``: 200 once start-up checks passed, every peer is up and a Kafka
  source is connected, else 503 with the reason (``peer down: …``, ``source
  not connected: …``; readiness: what a load balancer or systemd unit waits on).
- ``/status``: :meth:`Telemetry.snapshot` as JSON (``replicator status`` reads it).

Bound to ``service.metrics_address`` (default ``127.0.0.1:9464``, never all
interfaces by default: the status shows object keys' event times).

aiohttp and prometheus_client are imported when the server starts: ``status``
and ``check-config`` only parse the address here, and importing both cost
them more than the rest of their start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from replicator.metrics import Telemetry

DEFAULT_ADDRESS = "127.0.0.1:9464"


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ConfigError names the key."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"service.metrics_address: {address!r} is not host:port (e.g. {DEFAULT_ADDRESS})"
        )
    return host, int(port)


class MetricsServer:
    """A running endpoint; ``port`` is the bound one (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()


def _app(telemetry: Telemetry) -> web.Application:
    from aiohttp import web  # noqa: PLC0415 - only when serving
    from prometheus_client.exposition import choose_encoder  # noqa: PLC0415

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(telemetry.registry)
        # Passed as a raw header: aiohttp's content_type= refuses parameters.
        return web.Response(body=body, headers={"Content-Type": content_type.strip()})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ready, reason = telemetry.ready()
        if ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(telemetry.snapshot())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    return app


async def serve(telemetry: Telemetry, address: str = DEFAULT_ADDRESS) -> MetricsServer:
    """Start serving; ConfigError (exit 2) when the address is bad or taken."""
    from aiohttp import web  # noqa: PLC0415 - only when serving

    host, port = parse_address(address)
    runner = web.AppRunner(_app(telemetry), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"service.metrics_address: cannot listen on {address}: {exc.strerror or exc}"
        ) from exc
    bound = runner.addresses[0]
    return MetricsServer(runner, host, int(bound[1]))
