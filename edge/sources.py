"""Audio in: microphone (PyAudio), files, raw PCM on stdin, all delivered as 16 kHz mono float32 chunks.

A source's `read()` returns the next chunk, an empty array when nothing arrived yet (so the caller can check
for shutdown), or None at the end of the stream; faults raise `SourceError`. `ResilientSource` wraps a
source factory: on a fault it logs, closes, waits with exponential backoff and reopens, so an unplugged
microphone never takes the service down. Devices at 44.1/48 kHz are resampled in the stream by
`StreamingResampler`, whose output equals `edge.audio.resample` of the whole signal for any chunking.
"""

from __future__ import annotations

import logging
import math
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import numpy.typing as npt

from edge.audio import TARGET_RATE, _polyphase_filter, load_audio

__all__ = [
    "AudioSource",
    "FileSource",
    "MicSource",
    "ResilientSource",
    "SourceError",
    "StdinSource",
    "StreamingResampler",
    "list_devices",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
_EMPTY = np.zeros(0, dtype=np.float32)
_PA_INPUT_OVERFLOWED = -9981


class SourceError(RuntimeError):
    """The audio source failed (device missing, unplugged, read error); the caller may reopen it."""


class AudioSource(Protocol):
    def read(self) -> FloatArray | None: ...

    def close(self) -> None: ...


class StreamingResampler:
    """Polyphase resampling chunk by chunk; `push` + `flush` equal `edge.audio.resample` of the whole signal."""

    def __init__(self, orig_rate: int, target_rate: int = TARGET_RATE) -> None:
        if orig_rate <= 0 or target_rate <= 0:
            raise ValueError(f"StreamingResampler: rates must be positive, got {orig_rate} -> {target_rate}")
        g = math.gcd(orig_rate, target_rate)
        self.up, self.down = target_rate // g, orig_rate // g
        h, self._half_len = _polyphase_filter(self.up, self.down)
        self._taps_per_phase = -(-h.shape[0] // self.up)
        self._padded_h = np.zeros(self._taps_per_phase * self.up)
        self._padded_h[: h.shape[0]] = h
        self._buffer = np.zeros(0, dtype=np.float64)
        self._buffer_start = 0  # global index of _buffer[0]
        self._received = 0
        self._emitted = 0

    def _compute(self, first: int, last: int, total: int | None) -> FloatArray:
        """Outputs first..last-1; inputs beyond the received ones (or beyond `total`) count as zero."""
        if last <= first:
            return _EMPTY
        position = np.arange(first, last, dtype=np.int64) * self.down + self._half_len
        tap_index = (position % self.up)[:, None] + self.up * np.arange(self._taps_per_phase)[None, :]
        input_index = (position[:, None] - tap_index) // self.up
        end = self._received if total is None else total
        valid = (input_index >= 0) & (input_index < end)
        local = np.clip(input_index - self._buffer_start, 0, max(self._buffer.shape[0] - 1, 0))
        source = self._buffer if self._buffer.size else np.zeros(1)
        gathered = np.where(valid, source[local], 0.0)
        out: FloatArray = np.einsum("ij,ij->i", gathered, self._padded_h[tap_index]).astype(np.float32)
        return out

    def push(self, chunk: npt.ArrayLike) -> FloatArray:
        x = np.asarray(chunk, dtype=np.float64).reshape(-1)
        if self.up == self.down:
            self._received += x.shape[0]
            return x.astype(np.float32)
        self._buffer = np.concatenate((self._buffer, x)) if self._buffer.size else x.copy()
        self._received += x.shape[0]
        # Output m needs inputs up to (m * down + half_len) // up.
        ready = max(0, (self._received * self.up - 1 - self._half_len) // self.down + 1)
        ready = min(ready, -(-self._received * self.up // self.down))
        out = self._compute(self._emitted, ready, None)
        self._emitted = max(self._emitted, ready)
        # Keep only the inputs the next output can still reach.
        next_position = self._emitted * self.down + self._half_len
        oldest_needed = (next_position - (self._taps_per_phase * self.up - 1)) // self.up
        drop = max(0, oldest_needed - self._buffer_start)
        if drop:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        return out

    def flush(self) -> FloatArray:
        """The remaining outputs at the end of the stream (total ceil(n * up / down))."""
        if self.up == self.down:
            return _EMPTY
        total_out = -(-self._received * self.up // self.down)
        out = self._compute(self._emitted, total_out, self._received)
        self._emitted = total_out
        return out


class FileSource:
    """A WAV/FLAC file (any rate, resampled to 16 kHz), delivered as fast as the caller reads."""

    def __init__(self, path: str | Path, chunk_samples: int = 1600) -> None:
        self.path = Path(path)
        self.audio = load_audio(self.path)
        self.chunk_samples = chunk_samples
        self._position = 0

    def read(self) -> FloatArray | None:
        if self._position >= self.audio.shape[0]:
            return None
        chunk = self.audio[self._position : self._position + self.chunk_samples]
        self._position += chunk.shape[0]
        return chunk

    def close(self) -> None:
        self._position = self.audio.shape[0]


class StdinSource:
    """Raw 16 kHz mono S16_LE PCM from a pipe; waits at most `poll_s` per read so shutdown stays prompt."""

    def __init__(self, stream: BinaryIO, chunk_samples: int = 1600, poll_s: float = 0.2) -> None:
        self._fd = stream.fileno()
        self.chunk_bytes = 2 * chunk_samples
        self.poll_s = poll_s
        self._leftover = b""

    def read(self) -> FloatArray | None:
        ready, _, _ = select.select([self._fd], [], [], self.poll_s)
        if not ready:
            return _EMPTY
        try:
            data = os.read(self._fd, self.chunk_bytes)
        except OSError as error:
            raise SourceError(f"stdin: read failed ({error})") from error
        if not data:
            return None
        data = self._leftover + data
        usable = len(data) - len(data) % 2
        self._leftover = data[usable:]
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0

    def close(self) -> None:
        pass


def _pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as error:
        raise SourceError(
            "microphone capture needs PyAudio (pip install pyaudio; apt install portaudio19-dev)"
        ) from error
    return pyaudio


def list_devices() -> list[dict[str, Any]]:
    """Input devices as PyAudio sees them: index, name, channels, default rate."""
    pyaudio = _pyaudio()
    audio = pyaudio.PyAudio()
    try:
        devices = []
        for index in range(audio.get_device_count()):
            info = audio.get_device_info_by_index(index)
            if int(info.get("maxInputChannels", 0)) > 0:
                devices.append(
                    {
                        "index": index,
                        "name": str(info.get("name")),
                        "channels": int(info["maxInputChannels"]),
                        "default_rate": int(float(info.get("defaultSampleRate", 0))),
                    }
                )
        return devices
    finally:
        audio.terminate()


@dataclass
class MicSource:
    """PyAudio capture at 16 kHz, or at the device's native rate resampled to 16 kHz in the stream."""

    device: str = ""
    sample_rate: int = 0
    chunk_ms: int = 100

    def __post_init__(self) -> None:
        pyaudio = _pyaudio()
        self._paInt16 = pyaudio.paInt16
        self._audio = pyaudio.PyAudio()
        self._stream: Any = None
        self._overflows = 0
        try:
            self._open()
        except Exception:
            self._audio.terminate()
            raise

    def _find_device(self) -> dict[str, Any]:
        count = self._audio.get_device_count()
        if not self.device:
            try:
                return dict(self._audio.get_default_input_device_info())
            except OSError as error:
                raise SourceError(
                    f"no default input device ({error}); is a microphone plugged in?"
                ) from error
        if self.device.isdigit():
            index = int(self.device)
            if index >= count:
                raise SourceError(
                    f"audio.device {index}: no such device (there are {count}; see `kws-edge devices`)"
                )
            return dict(self._audio.get_device_info_by_index(index))
        for index in range(count):
            info = self._audio.get_device_info_by_index(index)
            if (
                self.device.lower() in str(info.get("name", "")).lower()
                and int(info.get("maxInputChannels", 0)) > 0
            ):
                return dict(info)
        raise SourceError(
            f"audio.device {self.device!r}: no input device of that name (see `kws-edge devices`)"
        )

    def _open(self) -> None:
        info = self._find_device()
        index = int(info["index"])
        rate = self.sample_rate
        if rate == 0:
            try:
                supported = self._audio.is_format_supported(
                    TARGET_RATE, input_device=index, input_channels=1, input_format=self._paInt16
                )
            except ValueError:
                supported = False
            rate = TARGET_RATE if supported else int(float(info["defaultSampleRate"]))
        self.rate = rate
        self.frames_per_buffer = max(1, rate * self.chunk_ms // 1000)
        self._resampler = StreamingResampler(rate) if rate != TARGET_RATE else None
        try:
            self._stream = self._audio.open(
                format=self._paInt16,
                channels=1,
                rate=rate,
                input=True,
                input_device_index=index,
                frames_per_buffer=self.frames_per_buffer,
            )
        except (OSError, ValueError) as error:
            raise SourceError(
                f"cannot open input device {info.get('name')!r} at {rate} Hz ({error})"
            ) from error
        log.info(
            "capturing from %r at %d Hz%s",
            info.get("name"),
            rate,
            " (resampled to 16 kHz)" if self._resampler else "",
        )

    def read(self) -> FloatArray | None:
        try:
            data = self._stream.read(self.frames_per_buffer, exception_on_overflow=True)
        except OSError as error:
            if getattr(error, "errno", None) == _PA_INPUT_OVERFLOWED or "overflow" in str(error).lower():
                self._overflows += 1
                if self._overflows in (1, 10, 100) or self._overflows % 1000 == 0:
                    log.warning(
                        "audio input overflowed (%d times so far): the loop fell behind", self._overflows
                    )
                return _EMPTY
            raise SourceError(f"microphone read failed ({error}); unplugged?") from error
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        return self._resampler.push(samples) if self._resampler is not None else samples

    def close(self) -> None:
        try:
            if self._stream is not None:
                self._stream.stop_stream()
                self._stream.close()
        except OSError as error:
            log.debug("closing the microphone stream: %s", error)
        finally:
            self._stream = None
            self._audio.terminate()


class ResilientSource:
    """Reopen a failing source with exponential backoff; `read()` never raises `SourceError`.

    `stop` (a threading.Event) interrupts the waits. `on_event` receives fault/recovery events for the
    JSON log. `reconnects` counts reopenings (the detector treats each as a break in the audio).
    """

    def __init__(
        self,
        factory: Callable[[], AudioSource],
        stop: threading.Event,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._factory = factory
        self._stop = stop
        self._initial = retry_initial_s
        self._max = retry_max_s
        self._on_event = on_event or (lambda event: None)
        self._source: AudioSource | None = None
        self.failures = 0
        self.reconnects = 0

    def _fail(self, error: Exception) -> None:
        self.failures += 1
        delay = min(self._max, self._initial * 2 ** min(self.failures - 1, 20))
        log.error("audio source failed: %s; retrying in %.1f s", error, delay)
        self._on_event({"event": "audio_error", "error": str(error), "retry_in_s": delay})
        if self._source is not None:
            try:
                self._source.close()
            except Exception as close_error:  # a broken device may fail to close too
                log.debug("closing the failed source: %s", close_error)
            self._source = None
        self._stop.wait(delay)

    def read(self) -> FloatArray | None:
        if self._stop.is_set():
            return None
        if self._source is None:
            try:
                self._source = self._factory()
            except (SourceError, OSError) as error:
                self._fail(error)
                return _EMPTY
            if self.failures:
                self.reconnects += 1
                log.info("audio source reopened after %d failure(s)", self.failures)
                self._on_event({"event": "audio_recovered", "after_failures": self.failures})
            self.failures = 0
        try:
            return self._source.read()
        except (SourceError, OSError) as error:
            self._fail(error)
            return _EMPTY

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
