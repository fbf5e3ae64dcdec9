"""End to end: the real `kws-edge` processes (enroll, run, replay, embed, reject) on real audio, mock GPIO."""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.audio import load_audio
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


def _kws(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(**env),
    )


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def enrolled(tmp_path: Path, random_model_path: Path, keyword_stream: KeywordStream) -> tuple[Path, Path]:
    """A config file and a state dir holding 'happy' enrolled from the stream's keyword clip."""
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\npath = "{random_model_path}"\n[state]\ndir = "{state}"\n[detector]\nthreshold = 0.7\n'
        "[output]\nhook_timeout_s = 5.0\n"
    )
    hook = f"echo $UDKWS_KEYWORD $UDKWS_TIME_S >> {tmp_path / 'hook.log'}"
    result = _kws(
        "enroll",
        "happy",
        str(keyword_stream.keyword_clip),
        "--config",
        str(config),
        "--no-checks",
        "--pin",
        "22",
        "--hook",
        hook,
    )
    assert result.returncode == 0, result.stderr
    return config, state


def _check_times(detections: list[dict[str, Any]], stream: KeywordStream) -> None:
    times = [d["time_s"] for d in detections]
    assert len(times) == len(stream.keyword_times), times
    for (start, end), t in zip(stream.keyword_times, times, strict=True):
        assert start < t <= end + 1.5, (start, t)
    for start, end in stream.other_times:
        assert not [
            t
            for t in times
            if start + 0.5 < t <= end + 1.0 and not any(s < t <= e + 1.5 for s, e in stream.keyword_times)
        ]


def test_run_on_a_wav_detects_lights_leds_and_runs_hooks(
    enrolled: tuple[Path, Path], keyword_stream: KeywordStream, tmp_path: Path
) -> None:
    config, state = enrolled
    result = _kws("run", "--config", str(config), "--file", str(keyword_stream.path))
    assert result.returncode == 0, result.stderr
    events = _events(result.stdout)
    assert events[0]["event"] == "keywords" and events[0]["active"] == ["happy"]
    detections = [e for e in events if e["event"] == "detection"]
    _check_times(detections, keyword_stream)
    leds = [e for e in events if e["event"] == "led"]
    assert [e["pin"] for e in leds] == ["status", 22] * 3
    assert (
        events[-1]["event"] == "stopped" and events[-1]["detections"] == 3 and events[-1]["windows_gated"] > 0
    )
    hook_lines = (tmp_path / "hook.log").read_text().split("\n")
    assert [line.split()[0] for line in hook_lines if line] == ["happy"] * 3
    assert (state / "detections" / "happy.wav").is_file()

    # The same stream through `replay` gives the same detections.
    replayed = _kws("replay", str(keyword_stream.path), "--config", str(config), "--json")
    assert replayed.returncode == 0, replayed.stderr
    replay_events = _events(replayed.stdout)
    assert [e["time_s"] for e in replay_events if e["event"] == "detection"] == [
        d["time_s"] for d in detections
    ]

    # `reject` turns the last detection's audio into a negative template.
    rejected = _kws("reject", "happy", "--config", str(config))
    assert rejected.returncode == 0, rejected.stderr
    listing = _kws("list", "--config", str(config), "--json")
    assert json.loads(listing.stdout)[0]["negatives"] == 1


def test_corrupt_and_mismatched_templates(enrolled: tuple[Path, Path], keyword_stream: KeywordStream) -> None:
    config, state = enrolled
    keywords = state / "keywords"
    good = (keywords / "happy.json").read_text()
    (keywords / "happy.json.bak").write_text(good)
    (keywords / "happy.json").write_text(good[: len(good) // 2])  # torn
    foreign = json.loads(good)
    foreign.update(name="foreign", model_sha256="f" * 64)
    (keywords / "foreign.json").write_text(json.dumps(foreign))
    result = _kws("run", "--config", str(config), "--file", str(keyword_stream.path), "--no-gpio")
    assert result.returncode == 0, result.stderr
    assert "using the previous version" in result.stderr
    assert "'foreign' was enrolled with another model" in result.stderr and "Re-enroll" in result.stderr
    events = _events(result.stdout)
    assert events[0]["active"] == ["happy"]
    _check_times([e for e in events if e["event"] == "detection"], keyword_stream)


def test_bad_config_exits_with_the_key_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[detector]\ntrigger_levle = 2\n")
    result = _kws("run", "--config", str(config), "--stdin")
    assert result.returncode == 2 and "detector.trigger_levle: unknown key" in result.stderr


def test_sigterm_exits_cleanly_and_systemd_is_notified(enrolled: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = enrolled
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(20)
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="200000"),
    )
    try:
        assert process.stdin is not None
        noise = (np.random.default_rng(0).standard_normal(16000) * 0.01 * 32767).astype("<i2")
        process.stdin.write(noise.tobytes())
        process.stdin.flush()
        messages = [listener.recv(256).decode()]
        deadline = time.monotonic() + 20
        while "WATCHDOG=1" not in messages and time.monotonic() < deadline:
            process.stdin.write(noise[:3200].tobytes())
            process.stdin.flush()
            messages.append(listener.recv(256).decode())
        assert messages[0] == "READY=1" and "WATCHDOG=1" in messages
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)  # the pipe stays open: the loop must notice the signal itself
        returncode = process.wait(timeout=10)
        elapsed = time.monotonic() - started
        assert returncode == 0 and elapsed < 2.0, (returncode, elapsed)
        listener.settimeout(1)
        rest = []
        try:
            while True:
                rest.append(listener.recv(256).decode())
        except TimeoutError:
            pass
        assert "STOPPING=1" in rest
        events = _events(process.stdout.read().decode())  # type: ignore[union-attr]
        assert events[-1]["event"] == "stopped" and events[-1]["audio_s"] > 0
    finally:
        if process.poll() is None:
            process.kill()
        listener.close()


def test_embed_matches_the_daemon_windows(
    random_model_path: Path, keyword_stream: KeywordStream, tmp_path: Path
) -> None:
    out = tmp_path / "e.npz"
    result = _kws("embed", "--model", str(random_model_path), str(keyword_stream.path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = np.load(out)
    audio = load_audio(keyword_stream.path)
    assert data["embeddings"].shape == (1 + (audio.shape[0] - 24000) // 1600, 32)
    np.testing.assert_allclose(data["start_s"][:3], [0.0, 0.1, 0.2])
    windows = np.stack([audio[int(s * 16000) : int(s * 16000) + 24000] for s in data["start_s"][::25]])
    np.save(tmp_path / "w.npy", windows)
    result = _kws(
        "embed",
        "--model",
        str(random_model_path),
        "--input",
        str(tmp_path / "w.npy"),
        "--output",
        str(tmp_path / "e.npy"),
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), data["embeddings"][::25], atol=2e-3)
    info = _kws("info", "--model", str(random_model_path))
    assert json.loads(info.stdout)["window_samples"] == 24000


class _FlakyStream:
    """Serves a recording in 100 ms chunks; the first opening dies after `fail_after` chunks (unplugged)."""

    def __init__(self, audio: np.ndarray, start: int, fail_after: int | None, on_chunk: Any = None) -> None:
        self.audio, self.position, self.fail_after, self.on_chunk = audio, start, fail_after, on_chunk
        self.served = 0

    def read(self) -> np.ndarray | None:
        from edge.sources import SourceError

        if self.fail_after is not None and self.served == self.fail_after:
            raise SourceError("device disappeared")
        if self.position >= self.audio.shape[0]:
            return None
        chunk = self.audio[self.position : self.position + 1600]
        self.position += chunk.shape[0]
        self.served += 1
        if self.on_chunk is not None:
            self.on_chunk(self.position)
        return chunk

    def close(self) -> None:
        pass


def test_daemon_survives_a_failing_source_and_button_rejects(
    enrolled: tuple[Path, Path], keyword_stream: KeywordStream, caplog: pytest.LogCaptureFixture
) -> None:
    import io
    import logging

    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from edge.config import load_config
    from edge.daemon import Daemon, EventSink
    from edge.model import load_model

    config_path, state = enrolled
    config = load_config(config_path, {"gpio.bounce_s": 0.0, "audio.retry_initial_s": 0.01})
    Device.pin_factory = MockFactory()
    audio = load_audio(keyword_stream.path)
    opened: list[_FlakyStream] = []
    button = Device.pin_factory.pin(config.gpio.button_pin)
    pressed = []

    def double_press_after_first_keyword(position: int) -> None:
        if not pressed and position >= int((keyword_stream.keyword_times[0][1] + 1.5) * 16000):
            pressed.append(position)
            for _ in range(2):
                button.drive_low()
                time.sleep(0.02)
                button.drive_high()
                time.sleep(0.02)

    def factory() -> _FlakyStream:
        # First opening: dies 5.0 s in; the reopened device continues where the audio is.
        start = opened[-1].position if opened else 0
        stream = _FlakyStream(audio, start, 50 if not opened else None, double_press_after_first_keyword)
        opened.append(stream)
        return stream

    out = io.StringIO()
    daemon = Daemon(config, load_model(config.model.path), factory, events=EventSink(out))
    try:
        with caplog.at_level(logging.ERROR):
            assert daemon.run() == 0
    finally:
        Device.pin_factory.reset()
    events = _events(out.getvalue())
    kinds = [e["event"] for e in events]
    assert "audio_error" in kinds and "audio_recovered" in kinds and len(opened) == 2
    assert "device disappeared" in caplog.text
    assert any(e["event"] == "button" and e["gesture"] == "double" for e in events)
    assert "rejected" in kinds
    detections = [e for e in events if e["event"] == "detection"]
    assert detections and detections[0]["time_s"] <= keyword_stream.keyword_times[0][1] + 1.5
    assert json.loads((state / "keywords" / "happy.json").read_text())["negatives"]
    # Audio after the reopening is still analysed (the clock continues).
    assert events[-1]["audio_s"] == pytest.approx(audio.shape[0] / 16000, abs=0.1)


def test_hooks_run_in_the_background_and_time_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import io
    import logging

    from edge.detector import Detection
    from edge.outputs import EventSink, HookRunner

    out = io.StringIO()
    runner = HookRunner(timeout_s=0.3, workers=2, events=EventSink(out))

    def detection(hook: str) -> Detection:
        return Detection("lamp", 0.9, 0.8, 0, 24000, None, hook, np.zeros(24000, dtype=np.float32))

    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        runner.submit(detection("sleep 5"))
        runner.submit(detection(f"echo $UDKWS_KEYWORD $UDKWS_SCORE > {tmp_path / 'ran'}"))
        assert time.monotonic() - started < 0.1  # submit never waits for the command
        runner.close(wait_s=2.0)
    assert (tmp_path / "ran").read_text().split() == ["lamp", "0.9000"]
    statuses = sorted(str(e["status"]) for e in _events(out.getvalue()))
    assert statuses == ["0", "timeout"] and "timed out" in caplog.text
