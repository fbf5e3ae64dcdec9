"""Where the Wyoming service runs: on its own event-loop thread beside the daemon's microphone loop
(`kws-edge run` with `[wyoming]` on), or as the whole process (`kws-edge wyoming`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from edge.outputs import SystemdNotifier
from edge.wyoming_server import WakeServer

__all__ = ["WakeServerThread", "serve_until_stopped"]


class WakeServerThread:
    """A WakeServer on its own event-loop thread, beside the daemon's microphone loop (`kws-edge run`).

    It gets its own encoder (a second LiteRT interpreter, about 1-4 MB): an interpreter must never be used by
    two threads at once, and this way the microphone loop never waits for a network client.
    """

    def __init__(self, make_server: Callable[[], WakeServer]) -> None:
        self._make_server = make_server
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server: WakeServer | None = None
        self._thread = threading.Thread(target=self._main, name="wyoming", daemon=True)

    def start(self, timeout_s: float = 60.0) -> str:
        """Start serving; returns the bound URI, or raises the listening error (OSError) here."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"wyoming: the server did not start within {timeout_s:.0f} s")
        if self._error is not None:
            raise self._error
        assert self.server is not None
        return self.server.uri

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.server = self._make_server()
            await self.server.start()
        except BaseException as error:  # handed to start() in the caller's thread
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.close()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def request_reload(self) -> None:
        if self.server is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.server.request_reload)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)


async def serve_until_stopped(server: WakeServer, stop: asyncio.Event, notifier: SystemdNotifier) -> None:
    """`kws-edge wyoming`: serve until `stop` is set; READY=1 once listening, WATCHDOG=1 from the event loop."""
    await server.start()
    notifier.notify("READY=1")
    try:
        while not stop.is_set():
            notifier.watchdog(time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        notifier.notify("STOPPING=1")
        await server.close()
