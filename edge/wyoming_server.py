"""A Wyoming wake-word service: clients (Home Assistant, wyoming-satellite) stream audio, udkws spots the keywords.

Protocol (wyoming 1.10): Describe -> Info, every enrolled keyword a wake word (`installed`: active, i.e. made with
the running model); Detect(names) picks the keywords a connection listens for (none given: all); AudioStart,
AudioChunk..., AudioStop carry audio at any rate, width (8/16/24/32-bit) and channel count, converted to the
detector's 16 kHz mono with the daemon's own resampler; each detection is answered with Detection(name,
timestamp) and a stream that ends without one with NotDetected. Every connection has its own converter and
`Detector` (stream clock, smoothing, refractory); they share one encoder, used only from the server's event loop
thread. Keyword files are re-read when they change (polled every `state.reload_s`, and on Describe): keywords
enrolled or removed while the server runs are served without a restart.

Nothing a client sends is trusted: a header over 64 KiB, a body over 1 MiB, bad JSON, a wrong field or an
unsupported format gets one log line and an Error event back; a malformed event closes that connection only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.wake import Detect, Detection, NotDetected

from edge.audio import TARGET_RATE
from edge.config import DetectorConfig, WyomingConfig
from edge.detector import Detection as KeywordDetection
from edge.detector import Detector
from edge.frontend import DEFAULT_CONFIG
from edge.model import Encoder
from edge.resolver import KeywordResolver
from edge.templates import TemplateStore
from edge.version import package_version
from edge.wyoming_events import (
    MAX_HEADER_BYTES,
    HopBatcher,
    KeywordCatalog,
    PcmConverter,
    PcmFormat,
    ProtocolError,
    read_event_sized,
    refuse,
    timestamp_of,
)

__all__ = ["WakeServer", "WakeSession"]

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
REST_OVERSHOOT_S = 0.005  # a live stream's socket is read again this long after its next window is due
LOW_WATER_GRACE_S = 0.25  # how long past a window's due time a client may stop short before we read anyway


class WakeSession(AsyncEventHandler):
    """One client connection: its keyword choice, its audio stream and its own detector."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: WakeServer
    ) -> None:
        super().__init__(reader, writer)
        self.server = server
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "local socket"
        self.names: list[str] | None = None
        self.converter: PcmConverter | None = None
        self.detector: Detector | None = None
        self.batcher = HopBatcher(1, 1)
        self.last_heard = time.monotonic()
        self._started_at = 0.0
        self.detected = False
        self._start_ms = 0
        self._catalog_version = -1
        self._event_bytes = 0  # the size of the last event read, on the wire
        self._low_water = 1  # SO_RCVLOWAT now set on the socket (1: the kernel's default)
        self._low_water_reset: asyncio.TimerHandle | None = None
        sock = writer.get_extra_info("socket")
        # A TCP socket can wake the event loop only once a window's worth of chunks has arrived (SO_RCVLOWAT);
        # other sockets rest by pausing the transport instead (see _rest_until_next_window).
        self._tcp_socket = (
            sock if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) else None
        )

    async def run(self) -> None:
        """Events until the client leaves, goes silent for idle_timeout_s, or sends something unusable."""
        try:
            while True:
                try:
                    # the server closes silent connections
                    event, self._event_bytes = await read_event_sized(self.reader)
                    if event is None:
                        break
                    self.last_heard = time.monotonic()
                    await self.handle_event(event)
                except ProtocolError as error:
                    # One line in the log and to the client, then goodbye: a client that sent one unusable
                    # event (a format we cannot take, say) would send the same with every chunk.
                    log.warning("wyoming client %s: %s; closing the connection", self.peer, error)
                    await refuse(self.reader, self.writer, str(error), error.code)
                    break
        except (ConnectionError, OSError) as error:
            log.debug("wyoming client %s: connection lost (%s)", self.peer, error)
        except Exception:  # a bug must cost one connection, never the service
            log.exception("wyoming client %s: internal error; closing the connection", self.peer)
        finally:
            if self._low_water_reset is not None:
                self._low_water_reset.cancel()
            self.writer.close()
            self.server.forget(self)

    async def handle_event(self, event: Event) -> bool:
        if AudioChunk.is_type(event.type):
            await self._chunk(event)
        elif Describe.is_type(event.type):
            self.server.catalog.refresh()
            await self.write_event(self.server.catalog.info(self.server.version).event())
        elif Detect.is_type(event.type):
            await self._detect(event.data)
        elif AudioStart.is_type(event.type):
            self._start(PcmFormat.parse(event.data, "audio-start"), timestamp_of(event.data) or 0)
        elif AudioStop.is_type(event.type):
            await self._stop()
        elif Ping.is_type(event.type):
            text = event.data.get("text")
            if isinstance(text, str):  # echoed as sent, unless it holds lone surrogates UTF-8 cannot encode
                text = text.encode("utf-8", "backslashreplace").decode("utf-8")
            await self.write_event(Pong(text=text if isinstance(text, str) else None).event())
        else:
            log.debug("wyoming client %s: ignoring a %r event", self.peer, event.type)
        return True

    async def _detect(self, data: dict[str, Any]) -> None:
        names = data.get("names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ProtocolError("detect: 'names' must be a list of strings or null")
        self.names = names or None  # [] means the client's default: every keyword
        self._apply_keywords()
        if self.names is not None:
            active = self.server.catalog.active
            unknown = [name for name in self.names if name not in active]
            if len(unknown) == len(self.names):
                raise ProtocolError(
                    f"detect: no active wake word named {', '.join(map(repr, unknown[:8]))}; active: "
                    f"{', '.join(active) or 'none (enroll one with kws-edge enroll)'}",
                    "unknown-wake-word",
                )
            if unknown:
                log.info(
                    "wyoming client %s: not enrolled here, ignored: %s",
                    self.peer,
                    ", ".join(map(repr, unknown[:8])),
                )

    def _apply_keywords(self) -> None:
        self._catalog_version = self.server.catalog.version
        if self.detector is not None:
            self.detector.set_templates(self.server.catalog.select(self.names))

    def _start(self, pcm: PcmFormat, timestamp_ms: int) -> None:
        self.converter = PcmConverter(pcm)
        templates = self.server.catalog.select(self.names)
        self.detector = Detector(self.server.encoder, templates, self.server.detector_settings)
        self.batcher = HopBatcher(self.detector.frames, self.detector.hop_frames)
        self.detector_hop_s = self.detector.hop_frames * DEFAULT_CONFIG.hop_samples / TARGET_RATE
        self._started_at = time.monotonic()
        self._catalog_version = self.server.catalog.version
        self.detected = False
        self._start_ms = timestamp_ms

    async def _chunk(self, event: Event) -> None:
        data = event.data
        current = self.converter.format if self.converter is not None else None
        if current is None or (data.get("rate"), data.get("width"), data.get("channels")) != (
            current.rate,
            current.width,
            current.channels,
        ):
            # A chunk without AudioStart (satellites stream this way) or in a new format: a new stream.
            self._start(PcmFormat.parse(data, "audio-chunk"), timestamp_of(data) or 0)
        assert self.converter is not None and self.detector is not None
        if self._catalog_version != self.server.catalog.version:
            self._apply_keywords()
        samples = self.converter.push(event.payload or b"")
        ready = self.batcher.push(samples)
        # Chunks shorter than a hop are read in bulk: on TCP by the kernel's low-water mark (any size below a
        # hop gains), elsewhere by pausing the transport (worth its timer only below half a hop).
        hop_samples = self.detector_hop_s * TARGET_RATE
        small = samples.shape[0] < (hop_samples if self._tcp_socket is not None else hop_samples / 2)
        if ready is not None:
            for detection in self.detector.push(ready):
                await self._report(detection, timestamp_of(data))
            if small:
                await self._rest_until_next_window(samples.shape[0])
        elif small and self._low_water == 1 and self._tcp_socket is not None:
            await self._rest_until_next_window(samples.shape[0])  # e.g. the first window of a stream

    async def _rest_until_next_window(self, chunk_samples: int) -> None:
        """With live audio, read nothing until the next window's last sample has arrived: the chunks that arrive
        meanwhile (Home Assistant sends 10 ms ones) are then read in one wake-up instead of one each, and
        wake-ups are most of what serving a stream costs. On TCP the kernel holds the socket unreadable until
        that many bytes are queued (SO_RCVLOWAT), with a timer that lifts the mark should the client stop short
        of it (an AudioStop, a Ping); elsewhere the transport pauses until the window is due, plus
        REST_OVERSHOOT_S. A client sending faster than real time (a file) is never held back."""
        assert self.detector is not None
        audio_s = self.detector.samples_seen / TARGET_RATE
        live = audio_s <= 1.25 * (time.monotonic() - self._started_at) + 0.2  # no faster than real time
        transport = self.writer.transport
        if not live or not isinstance(transport, asyncio.Transport) or transport.is_closing():
            self._set_low_water(1)
            return
        wait_s = self.batcher.missing / TARGET_RATE
        if self._tcp_socket is not None and chunk_samples > 0:
            chunks = -(-self.batcher.missing // chunk_samples)
            self._set_low_water(max(1, chunks * self._event_bytes))
            if self._low_water_reset is not None:
                self._low_water_reset.cancel()
            self._low_water_reset = asyncio.get_running_loop().call_later(
                wait_s + LOW_WATER_GRACE_S, self._set_low_water, 1
            )
            if self._low_water > 1:
                return
        transport.pause_reading()
        try:
            await asyncio.sleep(wait_s + REST_OVERSHOOT_S)
        finally:
            if not transport.is_closing():
                transport.resume_reading()

    def _set_low_water(self, size: int) -> None:
        """SO_RCVLOWAT of a TCP client's socket (1: wake on any byte); left at 1 where the kernel refuses."""
        if self._tcp_socket is None or size == self._low_water:
            return
        try:
            self._tcp_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
            self._low_water = size
        except OSError as error:  # closed, or a kernel without it: rest by pausing instead
            log.debug("wyoming client %s: SO_RCVLOWAT %d refused (%s)", self.peer, size, error)
            self._tcp_socket = None if size > 1 else self._tcp_socket
            self._low_water = 1

    async def _stop(self) -> None:
        self._set_low_water(1)  # what the client sends next (a Ping, a new stream) is read at once
        if self.converter is not None and self.detector is not None:
            for detection in self.detector.push(self.batcher.flush(self.converter.flush())):
                await self._report(detection, None)
        if not self.detected:
            await self.write_event(NotDetected().event())
        self.converter = self.detector = None
        self.detected = False

    async def _report(self, detection: KeywordDetection, chunk_ms: int | None) -> None:
        self.detected = True
        timestamp = (
            chunk_ms if chunk_ms is not None else self._start_ms + detection.end_sample * 1000 // TARGET_RATE
        )
        await self.write_event(Detection(name=detection.keyword, timestamp=timestamp).event())
        self.server.emit(
            {
                "event": "wyoming_detection",
                "client": self.peer,
                "keyword": detection.keyword,
                "score": round(detection.score, 4),
                "time_s": round(detection.time_s, 3),
            }
        )


class WakeServer:
    """The listening socket and its sessions; every method runs on the server's event loop."""

    def __init__(
        self,
        encoder: Encoder,
        store: TemplateStore,
        detector_settings: DetectorConfig,
        settings: WyomingConfig,
        reload_s: float = 2.0,
        on_event: EventCallback | None = None,
        resolver: KeywordResolver | None = None,
    ) -> None:
        self.encoder = encoder
        self.catalog = KeywordCatalog(store, encoder, resolver)
        self.detector_settings = detector_settings
        self.settings = settings
        self.reload_s = reload_s
        self.version = package_version()
        self._on_event = on_event
        self._sessions: set[WakeSession] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self.uri = settings.uri

    def emit(self, event: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def forget(self, session: WakeSession) -> None:
        self._sessions.discard(session)

    async def start(self) -> str:
        """Listen; returns the URI actually bound (tcp://host:0 picks a free port). OSError names the URI."""
        self.catalog.refresh(force=True)
        scheme, _, rest = self.settings.uri.partition("://")
        try:
            if scheme == "unix":
                path = Path(rest)
                if path.exists() and stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()  # a socket left by a previous run
                self._server = await asyncio.start_unix_server(
                    self._accept, path=rest, limit=MAX_HEADER_BYTES
                )
            else:
                host, _, port = rest.rpartition(":")
                self._server = await asyncio.start_server(
                    self._accept, host=host.strip("[]"), port=int(port), limit=MAX_HEADER_BYTES
                )
                bound = self._server.sockets[0].getsockname()
                self.uri = f"tcp://{host}:{bound[1]}"
        except OSError as error:
            hint = ""
            if error.errno == 97:  # EAFNOSUPPORT: systemd's RestrictAddressFamilies=AF_UNIX
                hint = "; under systemd the network drop-in is missing: re-run install.sh (docs/home-assistant.md)"
            raise OSError(
                f"wyoming.uri {self.settings.uri}: cannot listen ({error.strerror or error}){hint}"
            ) from None
        self._tasks.add(asyncio.create_task(self._poll_keywords()))
        log.info("wyoming: listening on %s", self.uri)
        self.emit({"event": "wyoming_listening", "uri": self.uri, "wake_words": list(self.catalog.active)})
        return self.uri

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = WakeSession(reader, writer, self)
        if len(self._sessions) >= self.settings.max_clients:
            log.warning("wyoming: refusing %s: %d clients already", session.peer, len(self._sessions))
            await refuse(
                reader,
                writer,
                f"too many clients (wyoming.max_clients = {self.settings.max_clients})",
                "busy",
            )
            return
        self._sessions.add(session)
        task = asyncio.create_task(session.run(), name=f"wyoming {session.peer}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll_keywords(self) -> None:
        """Re-read changed keywords every reload_s; close connections silent for idle_timeout_s."""
        tick = min(self.reload_s, 1.0)
        next_reload = time.monotonic() + self.reload_s
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now >= next_reload:
                next_reload = now + self.reload_s
                try:
                    self.catalog.refresh()
                except OSError as error:  # a keyword folder that vanished or became unreadable: keep serving
                    log.error("wyoming: cannot read the keywords: %s", error)
            for session in list(self._sessions):
                if now - session.last_heard > self.settings.idle_timeout_s:
                    log.info(
                        "wyoming client %s: silent for %.0f s, closing",
                        session.peer,
                        now - session.last_heard,
                    )
                    self._sessions.discard(session)
                    session.writer.close()

    def request_reload(self) -> None:
        self.catalog.refresh(force=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self.settings.uri.startswith("unix://"):
            Path(self.settings.uri[len("unix://") :]).unlink(missing_ok=True)
