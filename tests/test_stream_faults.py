"""Faults on the audio stream, through the real daemon with the shipped model: it keeps running, the systemd
watchdog keeps being fed, and the keyword is found again after each fault.

Faults: audio that stops (a stalled pipe) and resumes, an hour of digital silence, a full-scale square wave, a
DC offset (with the keyword spoken on top of it), raw PCM written in odd-sized bursts throughout, 8 kHz and 48 kHz
files through the resampler, a 48 kHz device that is unplugged and comes back (the microphone's streaming
resampler), and the wall clock stepped back ten years and forward again (libfaketime: only the daemon's clock).
The keyword is "happy", enrolled from the demo takes; its occurrences are the demo stream's own
(training.bench.soak_stream excerpts), which the shipped model finds in the demo.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.audio import resample, write_wav
from edge.config import load_config
from edge.daemon import Daemon as DaemonLoop
from edge.model import load_model
from edge.outputs import EventSink, SystemdNotifier
from edge.sources import SourceError, StreamingResampler
from tests.board_harness import REPO, TAKES, Daemon, env, kws, kws_command, write_config
from training.bench.soak_probe import NotifyListener
from training.bench.soak_stream import Excerpt, load_material, to_pcm

SHIPPED = REPO / "build" / "udkws_int8.tflite"
RATE = 16000
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
pytestmark = pytest.mark.skipif(
    not SHIPPED.is_file(), reason="build/udkws_int8.tflite not built (make test builds it)"
)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configuration with "happy" enrolled from the demo takes on the shipped model."""
    folder = tmp_path_factory.mktemp("faults")
    config = write_config(folder, SHIPPED)
    result = kws("enroll", "happy", *map(str, TAKES), "--config", str(config))
    assert result.returncode == 0, result.stderr
    return config


@pytest.fixture(scope="module")
def excerpts(kws_data_dir: Path) -> tuple[Excerpt, ...]:
    return load_material(REPO / "edge" / "demo", kws_data_dir / "gsc_noise").excerpts


def _bursts(pcm: bytes, rng: np.random.Generator) -> Iterator[bytes]:
    """PCM in odd-sized pieces, as a pipe from another program may deliver it."""
    position = 0
    while position < len(pcm):
        size = int(rng.integers(1, 40000)) | 1
        yield pcm[position : position + size]
        position += size


def _found(detections: list[dict[str, object]], start_s: float, end_s: float) -> bool:
    return any(start_s < float(d["time_s"]) <= end_s + 1.5 for d in detections)  # type: ignore[arg-type]


@pytest.mark.slow  # tens of seconds on a loaded 2-core machine
def test_the_daemon_rides_out_stalls_silence_square_waves_and_dc(
    board: Path, excerpts: tuple[Excerpt, ...], tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    square = np.where(np.arange(30 * RATE) % 160 < 80, 1.0, -1.0).astype(np.float32)  # 100 Hz, full scale
    noise = rng.normal(0, 0.003, 30 * RATE).astype(np.float32)
    keyword = excerpts[0]
    plan: list[tuple[str, np.ndarray | float]] = [
        ("keyword", keyword.audio),
        ("stall", 2.0),  # the pipe goes quiet for two seconds of wall time, then the audio resumes
        ("keyword", keyword.audio),
        ("silence", np.zeros(3600 * RATE, dtype=np.float32)),  # an hour of a source returning only zeros
        ("keyword", keyword.audio),
        ("square", square),
        ("keyword", keyword.audio),
        ("dc", np.clip(noise + 0.4, -1, 1)),
        ("keyword on DC", np.clip(keyword.audio + 0.4, -1, 1)),
        ("keyword", keyword.audio),
    ]
    daemon = Daemon(board, tmp_path, watchdog_usec=400000)
    try:
        assert daemon.notify.wait_for("READY=1", 60)
        position, expected, pings_in_stall = 0, [], 0
        for kind, content in plan:
            if kind == "stall":
                pings = daemon.watchdog_pings()
                time.sleep(float(content))  # type: ignore[arg-type]
                pings_in_stall = daemon.watchdog_pings() - pings
                continue
            assert isinstance(content, np.ndarray)
            if kind.startswith("keyword"):
                expected.append(
                    (kind, (position + keyword.word_start) / RATE, (position + keyword.word_end) / RATE)
                )
            for piece in _bursts(to_pcm(content), rng):
                daemon.feed(piece)
            position += content.shape[0]
            assert daemon.process.poll() is None, kind
        code = daemon.end_of_input()
    finally:
        if daemon.process.poll() is None:
            daemon.kill()
    assert code == 0 and b"Traceback" not in daemon.stderr, daemon.stderr[-3000:]
    detections = daemon.of_kind("detection")
    missed = [(kind, start) for kind, start, end in expected if not _found(detections, start, end)]
    assert not missed, (missed, detections)
    assert daemon.of_kind("stopped")[0]["audio_s"] == pytest.approx(position / RATE)
    count, longest = daemon.notify.watchdog_gaps()
    print(f"watchdog: {count} pings, {pings_in_stall} during the stall, longest silence {longest:.2f} s")
    assert pings_in_stall >= 3 and longest < 30.0  # WatchdogSec of the unit


@pytest.mark.parametrize("rate", [8000, 48000])
def test_files_at_8_and_48_khz_go_through_the_resampler(
    board: Path, excerpts: tuple[Excerpt, ...], tmp_path: Path, rate: int
) -> None:
    chosen = [
        excerpts[i] for i in (0, 1, 2, 4)
    ]  # the fifth is found at 0.50 after a 48 kHz round trip: too close
    stream = np.concatenate([np.concatenate([np.zeros(RATE, np.float32), e.audio]) for e in chosen])
    path = tmp_path / f"stream_{rate}.wav"
    write_wav(path, resample(stream, RATE, rate), rate)
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        done = subprocess.run(
            kws_command("run", "--file", str(path), "--config", str(board)), capture_output=True, text=True,
            env=env(NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="400000"), timeout=300, check=False,
        )  # fmt: skip
        pings, _ = listener.watchdog_gaps()
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr[-3000:]
    detections = [json.loads(line) for line in done.stdout.splitlines() if '"detection"' in line]
    position, missed = 0, []
    for excerpt in chosen:
        position += RATE
        if not _found(
            detections, (position + excerpt.word_start) / RATE, (position + excerpt.word_end) / RATE
        ):
            missed.append(position / RATE)
        position += excerpt.audio.shape[0]
    assert not missed and len(detections) == len(chosen), (missed, detections)
    assert pings > 0


class _UnpluggedMic:
    """What MicSource does with a 48 kHz device (StreamingResampler on 100 ms reads), minus PyAudio: the device
    delivers `audio` from `position` and disappears after `fail_after` reads (None: never)."""

    def __init__(self, audio48: np.ndarray, position: int, fail_after: int | None) -> None:
        self.audio, self.position, self.fail_after, self.reads = audio48, position, fail_after, 0
        self.resampler = StreamingResampler(48000)

    def read(self) -> np.ndarray | None:
        if self.reads == self.fail_after:
            raise SourceError("microphone read failed ([Errno -9999] Unanticipated host error); unplugged?")
        if self.position >= self.audio.shape[0]:
            return None
        frames = self.audio[self.position : self.position + 4800]
        self.position += frames.shape[0]
        self.reads += 1
        pcm = np.clip(np.round(frames * 32768), -32768, 32767).astype(np.int16)
        return self.resampler.push(pcm.astype(np.float32) / 32768.0)

    def close(self) -> None:
        pass


def test_a_48k_device_unplugged_and_back(board: Path, excerpts: tuple[Excerpt, ...], tmp_path: Path) -> None:
    config = load_config(board, {"audio.retry_initial_s": 0.05})
    parts = [np.concatenate([np.zeros(RATE, np.float32), excerpts[i].audio]) for i in (0, 2, 4)]
    audio48 = resample(np.concatenate(parts), RATE, 48000)
    opened: list[_UnpluggedMic] = []

    def factory() -> _UnpluggedMic:  # unplugged 7 s in; the audio goes on from where the device was
        opened.append(
            _UnpluggedMic(audio48, opened[-1].position if opened else 0, 70 if not opened else None)
        )
        return opened[-1]

    listener = NotifyListener(tmp_path / "notify.sock")
    out = io.StringIO()
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "200000"})
        loop = DaemonLoop(config, load_model(SHIPPED), factory, events=EventSink(out), notifier=notifier)
        assert loop.run() == 0
        pings, _ = listener.watchdog_gaps()
    finally:
        listener.close()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert len(opened) == 2 and "audio_error" in kinds and "audio_recovered" in kinds and pings > 0
    detections = [e for e in events if e["event"] == "detection"]
    assert len(detections) == 3 and detections[-1]["time_s"] > 7.0, detections  # found again after the return


@pytest.mark.skipif(not FAKETIME.is_file(), reason="libfaketime not installed (apt install libfaketime)")
def test_wall_clock_steps_do_not_disturb_the_daemon(
    board: Path, excerpts: tuple[Excerpt, ...], tmp_path: Path
) -> None:
    """NTP stepping the clock of a board without a real-time clock: ten years back, then a year ahead."""
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    clocked = env(
        LD_PRELOAD=str(FAKETIME), FAKETIME_TIMESTAMP_FILE=str(offset), FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",  # a step of the wall clock; the monotonic clock runs on
    )  # fmt: skip
    listener = NotifyListener(tmp_path / "clock.sock")
    process = subprocess.Popen(
        kws_command("run", "--stdin", "--config", str(board)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=clocked | {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"},
    )  # fmt: skip
    assert process.stdin is not None
    try:
        assert listener.wait_for("READY=1", 60)
        pings = []
        for step in ("+0", "-3650d", "+365d"):
            offset.write_text(step + "\n")
            time.sleep(0.5)
            process.stdin.write(to_pcm(np.concatenate([np.zeros(RATE, np.float32), excerpts[0].audio])))
            process.stdin.flush()
            time.sleep(1.0)
            pings.append(listener.watchdog_gaps()[0])
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        listener.close()
    assert process.returncode == 0 and b"Traceback" not in stderr, stderr[-3000:]
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith(b"{")]
    detections = [e for e in events if e["event"] == "detection"]
    years = {e["wall"][:4] for e in detections}
    assert len(detections) == 3 and len(years) == 3, detections  # one per clock, each found
    assert pings[0] < pings[1] < pings[2]
