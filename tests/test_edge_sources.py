"""edge.sources: the streaming resampler equals the batch one; sources; fault handling with retries."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.audio import resample, write_wav
from edge.sources import FileSource, ResilientSource, SourceError, StdinSource, StreamingResampler


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([48000, 44100, 22050, 32000, 8000, 16000]),
    length=st.integers(1, 12000),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    seed=st.integers(0, 2**16),
)
def test_streaming_resampler_equals_batch_for_any_chunking(
    rate: int, length: int, cuts: list[int], seed: int
) -> None:
    signal = np.random.default_rng(seed).standard_normal(length).astype(np.float32)
    resampler = StreamingResampler(rate)
    pieces, position = [], 0
    for size in cuts:
        pieces.append(resampler.push(signal[position : position + size]))
        position += size
    pieces.append(resampler.push(signal[position:]))
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    expected = resample(signal, rate, 16000)
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, atol=1e-6)


def test_streaming_resampler_latency_is_bounded() -> None:
    resampler = StreamingResampler(48000)
    out = sum(resampler.push(np.zeros(4800, dtype=np.float32)).shape[0] for _ in range(10))
    assert 16000 - out <= 16  # at most ~1 ms held back for the filter's look-ahead


def test_file_source_chunks_and_end(tmp_path: Path) -> None:
    audio = np.sin(np.arange(40000) / 10).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", audio, 48000)
    source = FileSource(tmp_path / "a.wav", chunk_samples=1000)
    chunks = []
    while (chunk := source.read()) is not None:
        chunks.append(chunk)
    assert sum(c.shape[0] for c in chunks) == -(-40000 // 3)
    assert max(c.shape[0] for c in chunks) == 1000


def test_stdin_source_decodes_pcm_and_odd_bytes() -> None:
    read_fd, write_fd = os.pipe()
    samples = (np.arange(-500, 500) * 30).astype("<i2")
    data = samples.tobytes()
    os.write(write_fd, data[:1001])  # split inside a sample
    with os.fdopen(read_fd, "rb") as stream:
        source = StdinSource(stream, chunk_samples=4000, poll_s=0.05)
        first = source.read()
        assert first is not None and first.shape[0] == 500
        assert source.read().shape[0] == 0  # nothing more yet: empty, not the end  # type: ignore[union-attr]
        os.write(write_fd, data[1001:])
        os.close(write_fd)
        second = source.read()
        assert second is not None
        np.testing.assert_array_equal(np.concatenate([first, second]), samples / 32768.0)
        assert source.read() is None


class _FlakySource:
    """Yields `good` chunks, then fails mid-stream."""

    def __init__(self, good: int) -> None:
        self.left = good

    def read(self) -> np.ndarray:
        if self.left == 0:
            raise SourceError("device unplugged")
        self.left -= 1
        return np.ones(160, dtype=np.float32)

    def close(self) -> None:
        pass


def test_resilient_source_logs_and_retries_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    opened: list[int] = []
    events: list[dict[str, object]] = []

    def factory() -> _FlakySource:
        opened.append(1)
        if len(opened) == 2:
            raise SourceError("no such device")
        return _FlakySource(good=2)

    stop = threading.Event()
    source = ResilientSource(factory, stop, retry_initial_s=0.01, retry_max_s=0.02, on_event=events.append)
    got = 0
    with caplog.at_level(logging.ERROR):
        for _ in range(12):
            chunk = source.read()
            assert chunk is not None
            got += chunk.shape[0]
    assert got >= 4 * 160 and len(opened) >= 3 and source.reconnects >= 1
    assert "device unplugged" in caplog.text and "no such device" in caplog.text
    assert {e["event"] for e in events} >= {"audio_error", "audio_recovered"}
    delays = [e["retry_in_s"] for e in events if e["event"] == "audio_error"]
    assert 0.02 in delays and 0.01 in delays  # doubled, capped
    stop.set()
    assert source.read() is None


class _FakeStream:
    def __init__(self, rate: int, script: list[object]) -> None:
        self.rate, self.script, self.closed = rate, script, False

    def read(self, frames: int, exception_on_overflow: bool = True) -> bytes:
        step = self.script.pop(0) if self.script else "tone"
        if isinstance(step, Exception):
            raise step
        t = np.arange(frames) / self.rate
        return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()

    def stop_stream(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class _FakePyAudio:
    """Stands in for PyAudio's device layer: one USB microphone that only does 48 kHz."""

    paInt16 = 8
    script: ClassVar[list[object]] = []
    opened: ClassVar[list[dict[str, object]]] = []

    class PyAudio:
        def get_device_count(self) -> int:
            return 2

        def get_device_info_by_index(self, index: int) -> dict[str, object]:
            return [
                {"index": 0, "name": "HDMI out", "maxInputChannels": 0, "defaultSampleRate": 48000.0},
                {
                    "index": 1,
                    "name": "USB PnP Sound Device",
                    "maxInputChannels": 1,
                    "defaultSampleRate": 48000.0,
                },
            ][index]

        def get_default_input_device_info(self) -> dict[str, object]:
            return self.get_device_info_by_index(1)

        def is_format_supported(self, rate: int, **_: object) -> bool:
            if rate != 48000:
                raise ValueError("Invalid sample rate")
            return True

        def open(self, **kwargs: object) -> _FakeStream:
            _FakePyAudio.opened.append(kwargs)
            return _FakeStream(int(kwargs["rate"]), _FakePyAudio.script)  # type: ignore[arg-type]

        def terminate(self) -> None:
            pass


def test_mic_source_picks_device_by_name_and_resamples_48k(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edge.sources import MicSource, list_devices

    monkeypatch.setitem(sys.modules, "pyaudio", _FakePyAudio)
    _FakePyAudio.opened.clear()
    _FakePyAudio.script[:] = []
    assert [d["name"] for d in list_devices()] == ["USB PnP Sound Device"]
    mic = MicSource(device="usb pnp", sample_rate=0, chunk_ms=100)
    assert mic.rate == 48000 and _FakePyAudio.opened[-1]["input_device_index"] == 1
    total = sum(mic.read().shape[0] for _ in range(10))  # type: ignore[union-attr]
    assert abs(total - 16000) <= 16  # 1 s at 48 kHz -> 1 s at 16 kHz (minus the filter look-ahead)
    mic.close()
    with pytest.raises(SourceError, match="no input device of that name"):
        MicSource(device="studio mic")
    with pytest.raises(SourceError, match="no such device"):
        MicSource(device="7")


def test_mic_source_overflow_is_tolerated_and_read_errors_raise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    from edge.sources import MicSource

    monkeypatch.setitem(sys.modules, "pyaudio", _FakePyAudio)
    overflow = OSError(-9981, "Input overflowed")
    overflow.errno = -9981
    _FakePyAudio.script[:] = [overflow, "tone", OSError(-9999, "Unanticipated host error")]
    mic = MicSource()
    with caplog.at_level(logging.WARNING):
        assert mic.read().shape[0] == 0  # type: ignore[union-attr]
    assert "overflowed" in caplog.text
    assert mic.read().shape[0] > 0  # type: ignore[union-attr]
    with pytest.raises(SourceError, match="unplugged"):
        mic.read()
    mic.close()
