"""A TCP relay that adds a fixed one-way delay, like a distant S3 endpoint.

Every byte from the client reaches the server ``delay`` seconds after it
arrived; the answer comes straight back. Each request therefore takes one
``delay`` longer, while bytes keep streaming (a delay, not a bandwidth cap):
what a cross-region source looks like to a daemon, without ``tc netem``
(which needs root and would slow every process on the machine's loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

_PIECE = 1 << 16


class LatencyProxy:
    def __init__(self, target_url: str, delay: float) -> None:
        parts = urlsplit(target_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"--source-latency needs an http:// endpoint, not {target_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.delay = delay
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen on a free loopback port; returns the URL to use instead."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._pipe(reader, up_w, self.delay), self._pipe(up_r, writer, 0.0)
            )
        finally:
            for w in (writer, up_w):
                w.close()
            self._tasks.discard(task)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float
    ) -> None:
        """Copy until EOF; each piece is written ``delay`` s after it arrived.

        Reading goes on while earlier pieces wait, so the delay shifts the
        stream in time without capping its rate."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            with contextlib.suppress(OSError):
                while piece := await src.read(_PIECE):
                    queue.put_nowait((loop.time() + delay, piece))
            queue.put_nowait((loop.time() + delay, b""))

        reading = asyncio.create_task(read())
        try:
            with contextlib.suppress(OSError):
                while True:
                    due, piece = await queue.get()
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    if not piece:
                        if dst.can_write_eof():
                            dst.write_eof()
                        return
                    dst.write(piece)
                    await dst.drain()
        finally:
            reading.cancel()
