"""The Wyoming service as users run it: real `kws-edge` processes, keywords from `kws-edge enroll`, and a client
that does what Home Assistant's wyoming integration does, through the real `wyoming` library."""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.wake import Detect, Detection

from edge.audio import load_audio
from edge.commands import score_against_truth
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "build" / "udkws_int8.tflite"
DEMO = REPO / "edge" / "demo"


def _env() -> dict[str, str]:
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("NOTIFY_SOCKET", None)
    return env


def kws(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=120, env=_env()
    )


class Service:
    """A running `kws-edge` process whose JSON event lines are collected as they come."""

    def __init__(self, *args: str, stdin: Any = subprocess.DEVNULL) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def wait_for(self, kind: str, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(event)
            if event["event"] == kind:
                return event
        stderr = self.process.stderr.read() if self.process.poll() is not None else ""  # type: ignore[union-attr]
        raise AssertionError(f"no {kind!r} event from {self.process.args}: {stderr[-2000:]}")

    def port(self) -> int:
        return int(self.wait_for("wyoming_listening")["uri"].rsplit(":", 1)[1])

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@contextmanager
def running(*args: str, stdin: Any = subprocess.DEVNULL) -> Iterator[Service]:
    service = Service(*args, stdin=stdin)
    try:
        yield service
    finally:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait(timeout=30)


async def wake_words(port: int) -> dict[str, bool]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        event = await asyncio.wait_for(client.read_event(), 60)
        assert event is not None and Info.is_type(event.type)
        return {m.name: m.installed for m in Info.from_event(event).wake[0].models}


async def home_assistant_wake_stage(
    port: int, pcm: bytes, chunks: list[tuple[int, int]], first: int, wake_word: str
) -> Detection | None:
    """One run of Home Assistant's wake word stage, as its wyoming integration does it: Detect(one name),
    AudioStart(16 kHz, 16-bit, mono), chunks with their timestamps (ms) from chunk `first` on, reading events
    meanwhile; the first Detection ends the stage and the connection. None when the audio ran out."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Detect(names=[wake_word]).event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        reading = asyncio.create_task(client.read_event())
        for start, end in chunks[first:]:
            chunk = AudioChunk(16000, 2, 1, pcm[2 * start : 2 * end], timestamp=start * 1000 // 16000)
            await client.write_event(chunk.event())
            await asyncio.sleep(0)  # let the reader run, as Home Assistant's loop over both tasks does
            if reading.done():
                break
        else:  # the audio ran out (a live stream never does): a ping tells when the service caught up
            await client.write_event(AudioStop().event())
            await client.write_event(Ping().event())
        event = await asyncio.wait_for(reading, 60)
        while event is not None and not Pong.is_type(event.type):
            if Detection.is_type(event.type):
                return Detection.from_event(event)
            assert event.type == "not-detected", event
            event = await asyncio.wait_for(client.read_event(), 60)
        return None


@pytest.mark.slow
@pytest.mark.skipif(
    not SHIPPED.is_file(), reason="the shipped model is not built (make test builds it first)"
)
def test_home_assistant_finds_every_keyword_of_the_demo_stream(tmp_path: Path) -> None:
    state = tmp_path / "state"
    takes = sorted(str(p) for p in DEMO.glob("enroll_happy_*.wav"))
    enrolled = kws("enroll", "happy", *takes, "--model", str(SHIPPED), "--state-dir", str(state))
    assert enrolled.returncode == 0, enrolled.stderr
    audio = load_audio(DEMO / "stream.flac")
    pcm = np.round(audio * 32768).clip(-32768, 32767).astype("<i2").tobytes()
    rng = np.random.default_rng(15)
    bounds = np.cumsum(rng.integers(320, 1601, size=audio.shape[0] // 320))  # chunks of 20-100 ms
    bounds = [0, *(int(b) for b in bounds if b < audio.shape[0]), audio.shape[0]]
    chunks = list(itertools.pairwise(bounds))
    chunk_at_ms = {start * 1000 // 16000: i for i, (start, _) in enumerate(chunks)}

    async def pipeline(port: int) -> tuple[dict[str, bool], list[float], list[str]]:
        words = await wake_words(port)
        times, names, index = [], [], 0
        while index < len(chunks):
            detection = await home_assistant_wake_stage(port, pcm, chunks, index, "happy")
            if detection is None:
                break
            # The detection names the chunk that completed it; live, the pipeline would now run speech to
            # text and start a new wake stage after it. Sent faster than real time, the client is further on.
            assert detection.timestamp is not None
            detected_chunk = chunk_at_ms[detection.timestamp]
            times.append(chunks[detected_chunk][1] / 16000)
            names.append(str(detection.name))
            index = detected_chunk + 1
        return words, times, names

    with running(
        "wyoming", "--model", str(SHIPPED), "--state-dir", str(state), "--uri", "tcp://127.0.0.1:0"
    ) as service:
        words, times, names = asyncio.run(pipeline(service.port()))
        assert service.stop() == 0
    assert words == {"happy": True}  # what `kws-edge enroll` made; the client enrolled nothing
    window_s = json.loads(SHIPPED.with_suffix(".json").read_text())["window_seconds"]
    summary = score_against_truth(times, DEMO / "stream_truth.json", window_s)
    print(f"Home Assistant-style client: {summary}")
    assert set(names) == {"happy"}
    assert (summary["detected"], summary["utterances"], summary["false_alarms"]) == (6, 6, 0), summary


def test_run_serves_wyoming_beside_its_own_audio(
    tmp_path: Path, random_model_path: Path, keyword_stream: KeywordStream
) -> None:
    """`kws-edge run` with [wyoming] on: the daemon keeps its own audio loop and serves clients; a keyword
    enrolled with `kws-edge enroll` while it runs becomes a wake word without a restart."""
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\npath = "{random_model_path}"\n[state]\ndir = "{state}"\nreload_s = 0.2\n'
        '[detector]\nthreshold = 0.7\n[gpio]\nenabled = false\n[wyoming]\nenabled = true\nuri = "tcp://127.0.0.1:0"\n'
    )
    enrolled = kws(
        "enroll", "happy", str(keyword_stream.keyword_clip), "--config", str(config), "--no-checks"
    )
    assert enrolled.returncode == 0, enrolled.stderr
    pcm = np.round(load_audio(keyword_stream.path) * 32768).astype("<i2").tobytes()

    async def satellite(port: int) -> list[int]:
        """A satellite streams without AudioStart and keeps the connection; a Ping marks the end."""
        async with AsyncTcpClient("127.0.0.1", port) as client:
            for offset in range(0, len(pcm), 1024):
                await client.write_event(AudioChunk(16000, 2, 1, pcm[offset : offset + 1024]).event())
            await client.write_event(Ping().event())
            stamps = []
            while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
                if Pong.is_type(event.type):
                    return stamps
                stamps.append(Detection.from_event(event).timestamp or 0)
        return stamps

    with running("run", "--config", str(config), "--stdin", stdin=subprocess.PIPE) as service:
        port = service.port()
        assert service.wait_for("started")
        stamps = asyncio.run(satellite(port))
        assert asyncio.run(wake_words(port)) == {"happy": True}
        added = kws(
            "enroll", "other", str(keyword_stream.keyword_clip), "--config", str(config), "--no-checks"
        )
        assert added.returncode == 0, added.stderr
        deadline = time.monotonic() + 60
        while asyncio.run(wake_words(port)) != {"happy": True, "other": True}:
            assert time.monotonic() < deadline, "the new keyword never became a wake word"
            time.sleep(0.1)
        assert service.stop() == 0
        stopped = service.wait_for("stopped")
    assert len(stamps) == 3, stamps
    for (start, end), stamp in zip(keyword_stream.keyword_times, stamps, strict=True):
        assert start < stamp / 1000 <= end + 1.5
    assert len([e for e in service.seen if e["event"] == "wyoming_detection"]) == 3
    assert stopped["detections"] == 0  # the daemon's own audio (an open, silent stdin) had none
