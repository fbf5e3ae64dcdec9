"""Fuzzing audio input: WAV/FLAC headers, and raw PCM on stdin in odd byte counts, bursts and stalls.

A damaged file gives audio or a ValueError whose one line names the file (never EOFError, a bare RuntimeError
from the `wave` module, or gigabytes of memory for a rate the header made up). PCM through a pipe decodes to the
same samples however it is cut and paced, and the detector sees the same windows as from one whole push.
Regression tests for the bugs found follow.
"""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import os
import struct
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.audio import load_audio, resample, write_wav
from edge.config import DetectorConfig
from edge.detector import Detector, WindowResult
from edge.model import load_model
from edge.sources import StdinSource
from tests.edge_fixtures import random_model_path  # noqa: F401

DEMO = Path(__file__).resolve().parents[1] / "edge" / "demo"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _short_wav(tmp: Path) -> bytes:
    write_wav(tmp / "seed.wav", load_audio(DEMO / "happy_012c8314_0.wav")[:4000])
    return (tmp / "seed.wav").read_bytes()


def _short_flac(tmp: Path) -> bytes:
    import soundfile

    soundfile.write(
        tmp / "seed.flac", load_audio(DEMO / "happy_012c8314_0.wav")[:4000], 16000, subtype="PCM_16"
    )
    return (tmp / "seed.flac").read_bytes()


def _load_or_one_line(path: Path) -> None:
    try:
        audio = load_audio(path)
    except ValueError as error:
        message = str(error)
        assert str(path) in message and "\n" not in message, message
        return
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
    assert np.all(np.isfinite(audio))


def _mutated(seed: bytes, data: st.DataObject, header: int) -> bytes:
    kind = data.draw(st.sampled_from(["overwrite", "truncate", "insert", "field"]))
    at = data.draw(st.integers(0, header))
    if kind == "truncate":
        return seed[: data.draw(st.integers(0, len(seed)))]
    if kind == "field":  # a 16- or 32-bit header field set to an extreme
        value = data.draw(st.sampled_from([0, 1, 3, 255, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
        packed = struct.pack("<I", value) if data.draw(st.booleans()) else struct.pack("<H", value & 0xFFFF)
        return seed[:at] + packed + seed[at + len(packed) :]
    patch = data.draw(st.binary(min_size=1, max_size=6))
    return seed[:at] + patch + seed[at + (len(patch) if kind == "overwrite" else 0) :]


@FUZZ
@given(data=st.data())
def test_any_damaged_wav_header(tmp_path: Path, data: st.DataObject) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "take.wav"
    path.write_bytes(_mutated(_short_wav(folder), data, 60))
    _load_or_one_line(path)


@FUZZ
@given(data=st.data())
def test_any_damaged_flac_header(tmp_path: Path, data: st.DataObject) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "take.flac"
    path.write_bytes(_mutated(_short_flac(folder), data, 120))
    _load_or_one_line(path)


@pytest.mark.parametrize("samples", [2**30, 2**36 - 1])
def test_a_flac_header_claiming_billions_of_samples(tmp_path: Path, samples: int) -> None:
    """The STREAMINFO sample count (36 bits) sizes soundfile's buffer: a lie must not take the memory with it."""
    seed = bytearray(_short_flac(tmp_path))
    seed[21] = (seed[21] & 0xF0) | (samples >> 32)
    seed[22:26] = (samples & 0xFFFFFFFF).to_bytes(4, "big")
    (tmp_path / "lying.flac").write_bytes(bytes(seed))
    with pytest.raises(ValueError, match=r"lying\.flac: not a readable audio file"):
        load_audio(tmp_path / "lying.flac")


def _pipe_through_stdin(data: bytes, bursts: list[int], stalls: list[float]) -> list[np.ndarray]:
    """Write `data` into a pipe in bursts with pauses between them; read it all with StdinSource."""
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        position = 0
        for size, stall in zip(bursts, stalls, strict=False):
            os.write(write_fd, data[position : position + size])
            position += size
            time.sleep(stall)
        while position < len(data):
            position += os.write(write_fd, data[position:])
        os.close(write_fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    chunks: list[np.ndarray] = []
    with os.fdopen(read_fd, "rb") as stream:
        source = StdinSource(stream, chunk_samples=1600, poll_s=0.005)
        while (chunk := source.read()) is not None:
            assert chunk.dtype == np.float32 and (chunk.size == 0 or float(np.max(np.abs(chunk))) <= 1.0)
            chunks.append(chunk)
    thread.join()
    return chunks


@FUZZ
@given(
    data=st.binary(max_size=9000),
    bursts=st.lists(st.integers(1, 4001), max_size=12),
    stalls=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.02]), max_size=12),
)
def test_stdin_pcm_in_any_bursts_decodes_the_same(
    data: bytes, bursts: list[int], stalls: list[float]
) -> None:
    chunks = _pipe_through_stdin(data, bursts, stalls)
    decoded = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    whole = np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").astype(np.float32) / 32768.0
    np.testing.assert_array_equal(decoded, whole)  # a trailing odd byte is dropped, nothing else


@settings(max_examples=12, deadline=None)
@given(bursts=st.lists(st.integers(1, 20001), min_size=1, max_size=8), seed=st.integers(0, 100))
def test_detector_sees_the_same_windows_however_stdin_is_cut(
    random_model_path: Path, bursts: list[int], seed: int
) -> None:
    encoder = load_model(random_model_path)
    speech = load_audio(DEMO / "happy_012c8314_0.wav")
    rng = np.random.default_rng(seed)
    audio = np.concatenate([rng.normal(0, 0.01, 8000), speech, np.zeros(9000), speech * 0.5]).astype(
        np.float32
    )
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2")

    def windows(chunks: list[np.ndarray]) -> list[tuple[int, bool, bytes]]:
        seen: list[WindowResult] = []
        detector = Detector(encoder, (), DetectorConfig(), on_window=seen.append)
        for chunk in chunks:
            detector.push(chunk)
        return [(w.end_sample, w.gated, b"" if w.embedding is None else w.embedding.tobytes()) for w in seen]

    piped = _pipe_through_stdin(pcm.tobytes(), bursts, [0.0] * len(bursts))
    assert windows(piped) == windows([pcm.astype(np.float32) / 32768.0])


# ---------------------------------------------------------------- regressions of the bugs the fuzzing found


def _header(rate: int = 16000, channels: int = 1, width: int = 2, data_bytes: int = 8000) -> bytes:
    byte_rate = rate * channels * width
    fmt = struct.pack("<HHIIHH", 1, channels, rate, byte_rate, channels * width, 8 * width)
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


def test_a_made_up_sample_rate_is_refused_instead_of_filling_memory(tmp_path: Path) -> None:
    """A rate field of 0x7FFFFFFF once asked the resampler for hundreds of gigabytes (the process was killed)."""
    for rate in (0x7FFFFFFF, 3_000_000_000 & 0x7FFFFFFF, 7):
        path = tmp_path / f"rate{rate}.wav"
        path.write_bytes(_header(rate=rate) + bytes(8000))
        with pytest.raises(ValueError, match=rf"rate{rate}\.wav: sample rate {rate} Hz"):
            load_audio(path)


def test_a_header_cut_short_or_a_lying_chunk_names_the_file(tmp_path: Path) -> None:
    """EOFError (a cut header) and a bare RuntimeError (a chunk size beyond the file) came out of `wave`."""
    whole = _header() + bytes(8000)
    for cut in (0, 4, 20, 30):
        (tmp_path / "cut.wav").write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=r"cut\.wav: not a readable WAV file"):
            load_audio(tmp_path / "cut.wav")
    lying = bytearray(whole)
    lying[12:16] = b"junk"  # an unknown chunk whose size runs past the end of the file
    lying[16:20] = struct.pack("<I", 0x81)
    (tmp_path / "lying.wav").write_bytes(bytes(lying))
    with pytest.raises(ValueError, match=r"lying\.wav: not a readable WAV file"):
        load_audio(tmp_path / "lying.wav")


def test_a_partial_last_frame_is_dropped(tmp_path: Path) -> None:
    """An odd data length or a channel count that does not divide it raised an unnamed numpy ValueError."""
    (tmp_path / "odd.wav").write_bytes(_header(data_bytes=8001) + bytes(8001))
    assert load_audio(tmp_path / "odd.wav").shape == (4000,)
    (tmp_path / "channels.wav").write_bytes(_header(channels=222, data_bytes=978) + bytes(978))
    assert load_audio(tmp_path / "channels.wav").shape == (2,)  # two whole frames of 222 channels


def test_resampling_a_minute_at_48k_stays_small() -> None:
    """Index arrays over the whole signal took about 2 GB for one minute at 48 kHz (the board has 1-4 GB)."""
    minute = np.random.default_rng(0).standard_normal(48000 * 60).astype(np.float32) * 0.1
    tracemalloc.start()
    try:
        out = resample(minute, 48000, 16000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (16000 * 60,)
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"
