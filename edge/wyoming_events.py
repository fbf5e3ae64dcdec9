"""Wyoming events in and out for the wake-word service: safe parsing, audio conversion, the keyword catalogue.

`read_event` replaces wyoming's own reader for input from the network: it bounds every length, checks every
type and raises `ProtocolError` (a one-line message) instead of raising whatever a malformed event provokes.
`PcmConverter` turns any rate, width (8-bit unsigned, 16/24/32-bit signed little-endian, as WAV) and channel
count into the detector's 16 kHz mono float32, with the daemon's resampler (`StreamingResampler`, the same
filter as `edge.audio.resample`). `KeywordCatalog` holds the enrolled keywords and answers Describe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Info, WakeModel, WakeProgram

from edge.audio import TARGET_RATE, decode_pcm
from edge.frontend import DEFAULT_CONFIG
from edge.model import Encoder
from edge.resolver import KeywordResolver
from edge.sources import StreamingResampler
from edge.templates import Template, TemplateMismatchError, TemplateStore

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "HopBatcher",
    "KeywordCatalog",
    "PcmConverter",
    "PcmFormat",
    "ProtocolError",
    "phrase_of",
    "read_event",
    "read_event_sized",
    "refuse",
    "timestamp_of",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1 << 20  # 1 MiB: over 2.7 s of 48 kHz stereo 32-bit audio in one chunk
MAX_RATIO_TERM = 1000  # resampling up/down terms beyond this need huge filters (e.g. 16001 Hz)
ATTRIBUTION = Attribution(name="udkws", url="https://github.com/udkws/udkws")
_EMPTY = np.zeros(0, dtype=np.float32)


def _one_line(text: str) -> str:
    """`text` fit for one log line and a JSON event: line breaks, other unprintable characters and lone
    surrogates (which JSON from a client may carry, and which UTF-8 cannot encode) written as escapes."""
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class ProtocolError(ValueError):
    """A client sent something this service cannot use; the message is one line for the log and the client."""

    def __init__(self, message: str, code: str = "bad-event") -> None:
        super().__init__(_one_line(message))  # it may quote the client's strings
        self.code = code


def _length(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BODY_BYTES:
        raise ProtocolError(f"{key} must be an integer in 0-{MAX_BODY_BYTES}, got {value!r:.40}")
    return value


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next Wyoming event, None when the connection closed; ProtocolError for anything malformed."""
    event, _ = await read_event_sized(reader)
    return event


async def read_event_sized(reader: asyncio.StreamReader) -> tuple[Event | None, int]:
    """`read_event`, and the bytes the event took on the wire (header line, data and payload)."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError: no newline within the reader's limit
        raise ProtocolError(f"event header longer than {MAX_HEADER_BYTES} bytes") from None
    if not line.endswith(b"\n"):
        return None, len(line)  # closed, possibly in the middle of a header
    header = _json_object(line, "event header")
    event_type = header.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("event header needs a string 'type'")
    data = header.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise ProtocolError(f"{event_type:.40}: 'data' must be a JSON object")
    data_length, payload_length = _length(header, "data_length"), _length(header, "payload_length")
    try:
        if data_length:
            data = {**data, **_json_object(await reader.readexactly(data_length), f"{event_type:.40} data")}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None, len(line)
    return Event(type=event_type, data=data, payload=payload), len(line) + data_length + payload_length


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str, code: str) -> None:
    """Send an Error event and close our side, then read what the client still sends for a moment: closing a
    socket with unread data resets it, and the client would lose the error."""
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        await async_write_event(Error(text=text, code=code).event(), writer)
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(2.0):
            while await reader.read(1 << 16):
                pass
    writer.close()


def _int_field(data: dict[str, Any], key: str, what: str, low: int, high: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"{what}: '{key}' must be an integer in {low}-{high}, got {value!r:.40}")
    return value


# JSON allows 4300-digit integers; a detection's time (start + offset) past one could not be printed.
MAX_TIMESTAMP_MS = 1 << 62


def timestamp_of(data: dict[str, Any]) -> int | None:
    """A client's timestamp (ms), if it sent a usable one."""
    value = data.get("timestamp")
    usable = isinstance(value, int) and not isinstance(value, bool) and abs(value) < MAX_TIMESTAMP_MS
    return value if usable else None


@dataclass(frozen=True)
class PcmFormat:
    rate: int
    width: int
    channels: int

    @classmethod
    def parse(cls, data: dict[str, Any], what: str) -> PcmFormat:
        rate = _int_field(data, "rate", what, 4000, 192000)
        width = _int_field(data, "width", what, 1, 4)
        channels = _int_field(data, "channels", what, 1, 8)
        gcd = math.gcd(rate, TARGET_RATE)
        if max(rate, TARGET_RATE) // gcd > MAX_RATIO_TERM:
            raise ProtocolError(
                f"{what}: a rate of {rate} Hz cannot be resampled to 16 kHz here; use a common rate "
                "(8000, 11025, 16000, 22050, 32000, 44100, 48000 ...)"
            )
        return cls(rate, width, channels)


class PcmConverter:
    """Raw PCM bytes of one format to 16 kHz mono float32, chunk by chunk (a split sample frame is kept)."""

    def __init__(self, pcm: PcmFormat) -> None:
        self.format = pcm
        self._frame_bytes = pcm.width * pcm.channels
        self._leftover = b""
        self._resampler = StreamingResampler(pcm.rate) if pcm.rate != TARGET_RATE else None

    def push(self, raw: bytes) -> FloatArray:
        data = self._leftover + raw if self._leftover else raw
        usable = len(data) - len(data) % self._frame_bytes
        self._leftover = data[usable:]
        samples = decode_pcm(data[:usable], self.format.width)
        if self.format.channels > 1:
            samples = samples.reshape(-1, self.format.channels).mean(axis=1, dtype=np.float32)
        return self._resampler.push(samples) if self._resampler is not None else samples

    def flush(self) -> FloatArray:
        return self._resampler.flush() if self._resampler is not None else _EMPTY


class HopBatcher:
    """Holds converted samples until they complete the detector's next window, then releases them together.

    The detector evaluates a window every hop (100 ms); a client's 10-20 ms chunks would each cost a push (its
    fixed overhead is most of the detector's cost at that size). Released exactly when the window's last
    sample arrives, so no window is evaluated later than chunk by chunk, and the detector's results, which do
    not depend on the chunking, stay the same.
    """

    def __init__(self, frames: int, hop_frames: int) -> None:
        hop = DEFAULT_CONFIG.hop_samples
        self._next = DEFAULT_CONFIG.window_samples + (frames - 1) * hop  # samples that complete window 0
        self._step = hop_frames * hop
        self._parts: list[FloatArray] = []
        self._held = 0
        self._released = 0

    def push(self, samples: FloatArray) -> FloatArray | None:
        """`samples` added; what is held when it completes a window, else None."""
        self._hold(samples)
        return self.flush() if self._released + self._held >= self._next else None

    def flush(self, samples: FloatArray = _EMPTY) -> FloatArray:
        """Everything held, with `samples` added (the end of a stream)."""
        self._hold(samples)
        out = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts or [_EMPTY])
        self._released += self._held
        self._parts, self._held = [], 0
        while self._next <= self._released:
            self._next += self._step
        return out

    @property
    def missing(self) -> int:
        """Samples still to come before the next window can be evaluated."""
        return max(0, self._next - self._released - self._held)

    def _hold(self, samples: FloatArray) -> None:
        if samples.size:
            self._parts.append(samples)
            self._held += samples.size


def phrase_of(name: str) -> str:
    """What Home Assistant shows as the phrase: the keyword name with '_' and '-' as spaces."""
    return name.replace("_", " ").replace("-", " ")


class KeywordCatalog:
    """The enrolled keywords as wake words, re-read when their files change; `version` counts the changes."""

    def __init__(
        self, store: TemplateStore, encoder: Encoder, resolver: KeywordResolver | None = None
    ) -> None:
        self.store = store
        self.encoder = encoder
        # Thresholds and look-alikes as the daemon resolves them (false-alarm budget); without: as stored.
        self.resolver = resolver
        self.version = 0
        self.active: dict[str, Template] = {}
        self.inactive: list[str] = []
        self._signature: tuple[tuple[str, int, int], ...] | None = None

    def refresh(self, force: bool = False) -> bool:
        """Re-read the keywords if a file changed; True when something was re-read."""
        signature = self.store.signature()
        if not force and signature == self._signature:
            return False
        self._signature = signature
        active: dict[str, Template] = {}
        inactive: list[str] = []
        for template in self.store.list():
            try:
                template.check_model(
                    self.encoder.sha256,
                    self.encoder.frontend_fingerprint,
                    embedding_dim=self.encoder.embedding_dim,
                )
            except TemplateMismatchError as error:
                log.warning("wyoming: %s", error)
                inactive.append(template.name)
                continue
            active[template.name] = template
        if self.resolver is not None:
            active = {r.template.name: r.template for r in self.resolver.resolve(list(active.values()))}
        if list(active) != list(self.active) or inactive != self.inactive:
            log.info("wyoming: wake words %s", ", ".join(active) or "none (enroll one with kws-edge enroll)")
        self.active, self.inactive = active, inactive
        self.version += 1
        return True

    def select(self, names: Sequence[str] | None) -> list[Template]:
        if names is None:
            return list(self.active.values())
        return [self.active[name] for name in names if name in self.active]

    def info(self, version: str) -> Info:
        def model(name: str, installed: bool) -> WakeModel:
            description = (
                name if installed else f"{name} (inactive: enrolled with another model, re-enroll it)"
            )
            return WakeModel(
                name=name,
                attribution=ATTRIBUTION,
                installed=installed,
                description=description,
                version=None,
                languages=[],
                phrase=phrase_of(name),
            )

        models = [model(name, True) for name in self.active] + [model(name, False) for name in self.inactive]
        program = WakeProgram(
            name="udkws",
            attribution=ATTRIBUTION,
            installed=True,
            description="udkws: wake words you enrolled yourself (say a word three times)",
            version=version,
            models=models,
        )
        return Info(wake=[program])
