"""Power cuts: SIGKILL of `kws-edge enroll`, `remove`, `reject`, the daemon and a TemplateStore writer, many times.

After every kill each keyword file must be a complete copy of either its version before the command or the one
the command was writing (never partial, never lost), its `.bak` a complete earlier version, and leftover temp
files are never read as keywords; the daemon must start cleanly afterwards. The kills land where the writes
happen: the command-line kills watch the keyword folder and strike a random 0-3 ms after a temp file of the
keyword appears (some at random moments of the whole run instead); the writer kills strike at a random moment
within about four writes of a loop of writes (the delay calibrated on the machine's own write time). The daemon
starts cleanly after each daemon kill, and after each series of command or writer kills (a sample, not after
each). SIGKILL stops a process, not the disk: what the fsyncs add against a real power loss is not shown here
(docs/edge.md, "Robustness").
"""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.templates import Template, TemplateStore
from tests.board_harness import TAKES, Daemon, env, kws, kws_command, starts_cleanly, write_config
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401

REJECT_AUDIO = Path(__file__).resolve().parents[1] / "edge" / "demo" / "happy_012c8314_0.wav"
WRITER_KILLS = 200


def _normalised(data: bytes) -> dict[str, Any]:
    """A keyword file's content without its creation time (re-enrolling the same takes differs only there)."""
    raw = json.loads(data)
    Template.from_json(raw, "check")  # complete and valid
    raw.pop("created")
    return dict(raw)


def _temps(folder: Path, stem: str = "") -> set[str]:
    try:
        return {n for n in os.listdir(folder) if n.startswith(f".{stem}") and n.endswith(".tmp")}
    except FileNotFoundError:
        return set()


def _kill_in_write(
    process: subprocess.Popen[bytes], folder: Path, stem: str, rng: np.random.Generator
) -> bool:
    """SIGKILL `process` 0-3 ms after a new temp file of `stem` appears; False when it finished first."""
    before = _temps(folder, stem)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if _temps(folder, stem) - before:
            time.sleep(rng.uniform(0, 0.003))
            process.kill()
            break
        time.sleep(0.0002)
    process.wait()
    return process.returncode == -signal.SIGKILL


class KeywordFolder:
    """The state folder's keyword files, checked against the versions a command may leave behind."""

    def __init__(self, state: Path) -> None:
        self.folder = state / "keywords"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = TemplateStore(state)

    def snapshot(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.folder.iterdir() if not p.name.startswith(".")}

    def check(
        self, before: dict[str, bytes], name: str, new: list[dict[str, Any]], removal: bool = False
    ) -> str:
        """'old' or 'new' for keyword `name`; fails on anything else. Other keywords must be untouched."""
        after = self.snapshot()
        path, backup = f"{name}.json", f"{name}.json.bak"
        for other in set(before) | set(after):
            if not other.startswith(f"{name}.json"):
                assert after.get(other) == before.get(other), f"{other} changed"
        for file in (path, backup):
            if file in after:
                _normalised(after[file])  # every file present is complete
        if path not in after:
            if removal:
                assert after[backup] == before[path], "removed, but the .bak is not the removed version"
                return "new"
            assert path not in before, f"{path} lost"
            assert after.get(backup) == before.get(backup)
            return "old"  # enrolling where there was none: still none
        if after[path] == before.get(path):
            if backup in after:  # the previous copy may already be refreshed: it is the current version then
                assert after[backup] in (before.get(backup), before[path]), (
                    "the .bak is neither old nor current"
                )
            return "old"
        assert _normalised(after[path]) in new, f"{path} is neither the old nor the new version"
        if path in before:
            assert after.get(backup) == before[path], "the .bak is not the version replaced"
        return "new"


def _reference(model: Path, tmp: Path, *command: str) -> dict[str, Any]:
    """What `command` writes when it is not interrupted (on a scratch copy of a fresh state)."""
    config = write_config(tmp, model)
    assert kws("enroll", "happy", *map(str, TAKES), "--no-checks", "--config", str(config)).returncode == 0
    result = kws(*command, "--config", str(config))
    assert result.returncode == 0, result.stderr
    return _normalised((tmp / "state" / "keywords" / "happy.json").read_bytes())


@pytest.mark.slow  # tens of seconds on a loaded 2-core machine
def test_killed_commands_leave_the_old_or_the_new_keyword(random_model_path: Path, tmp_path: Path) -> None:
    enroll = ("enroll", "happy", *map(str, TAKES), "--no-checks")
    reject = ("reject", "happy", str(REJECT_AUDIO))
    enrolled = _reference(random_model_path, tmp_path / "ref1", *enroll)
    rejected_row = _reference(random_model_path, tmp_path / "ref2", *reject)["negatives"][-1]
    config = write_config(tmp_path, random_model_path)
    keywords = KeywordFolder(tmp_path / "state")
    assert kws(*enroll, "--config", str(config)).returncode == 0
    assert kws("enroll", "bystander", str(TAKES[0]), "--no-checks", "--config", str(config)).returncode == 0
    rng = np.random.default_rng(7)
    outcomes: dict[str, int] = {}
    kills = in_write = 0
    for round_index in range(36):
        present = (keywords.folder / "happy.json").is_file()
        operation = "enroll" if not present else ("enroll", "reject", "remove")[round_index % 3]
        before = keywords.snapshot()
        if operation == "reject":
            old = _normalised(before["happy.json"])
            new = [old | {"negatives": [*old["negatives"], rejected_row]}]
            command = reject
        else:
            new, command = [enrolled], enroll if operation == "enroll" else ("remove", "happy")
        process = subprocess.Popen(
            kws_command(*command, "--config", str(config)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env(),
        )  # fmt: skip
        if round_index % 3 == 2:  # a random moment of the whole run (mostly start-up)
            time.sleep(rng.uniform(0, 0.6))
            process.kill()
            process.wait()
            killed = process.returncode == -signal.SIGKILL
        else:
            killed = _kill_in_write(process, keywords.folder, "happy", rng)
            in_write += killed
        kills += killed
        state = keywords.check(before, "happy", new, removal=operation == "remove")
        outcomes[f"{operation} {'killed' if killed else 'finished'} -> {state}"] = (
            outcomes.get(f"{operation} {'killed' if killed else 'finished'} -> {state}", 0) + 1
        )
    print("command kills:", kills, "inside a write:", in_write, outcomes)
    assert kills >= 20 and in_write >= 8, outcomes
    # Leftover temp files are ignored: the daemon starts with exactly the complete keywords.
    expected = sorted(n for n in ("bystander", "happy") if (keywords.folder / f"{n}.json").is_file())
    starts_cleanly(config, tmp_path, expected)
    listed = json.loads(kws("list", "--json", "--config", str(config)).stdout)
    assert sorted(k["name"] for k in listed) == expected


@pytest.mark.slow  # tens of seconds on a loaded 2-core machine
def test_writer_killed_mid_write_hundreds_of_times(tmp_path: Path, random_model_path: Path) -> None:
    """A process looping TemplateStore writes (version k has k takes), killed WRITER_KILLS times."""
    store = TemplateStore(tmp_path / "state")
    embedding = np.random.default_rng(0).standard_normal(32).astype(np.float32)

    def version(k: int) -> Template:
        return Template("happy", embedding, "0" * 64, "f" * 16, takes=k, created="2026-01-01T00:00:00+00:00")

    def expected_bytes(k: int) -> bytes:
        return (json.dumps(version(k).to_json(), indent=1) + "\n").encode()

    durations = []
    for k in range(1, 6):  # calibrate the kill delays to how long one write takes here and now
        started = time.perf_counter()
        store.add(version(k))
        durations.append(time.perf_counter() - started)
    longest_delay = 4 * float(np.median(durations)) + 0.002  # the child's start, then ~4 writes
    folder, path = tmp_path / "state" / "keywords", store.path_for("happy")
    rng = np.random.default_rng(11)
    last, in_write, advanced = 5, 0, 0
    for _ in range(WRITER_KILLS):
        temps_before = _temps(folder)
        child = os.fork()
        if child == 0:  # the writer: rewrite the keyword with ever higher versions until killed
            try:
                k = store.get("happy").takes
                while True:
                    k += 1
                    store.add(version(k))
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0, longest_delay))
        os.kill(child, signal.SIGKILL)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        current = store.get("happy").takes
        assert path.read_bytes() == expected_bytes(current), "a partial keyword file"
        assert current >= last, f"version went back from {last} to {current}"
        backup = path.with_name("happy.json.bak")
        if backup.is_file():
            assert backup.read_bytes() in (expected_bytes(current), expected_bytes(current - 1))
        left_temp = bool(_temps(folder) - temps_before)
        in_write += left_temp
        advanced += current > last
        # A kill before the child's first write began (its fork and start-up took longer than calibrated: a
        # loaded or contended host) widens the delays, any other narrows them a little: about a quarter of the
        # kills land before the first write whatever the host's speed, the rest inside and between writes.
        too_early = not left_temp and current == last
        longest_delay = min(1.1 * longest_delay, 0.2) if too_early else 0.97 * longest_delay
        last = current
    print(
        f"writer kills: {WRITER_KILLS} (delays up to {1000 * longest_delay:.1f} ms at the end), inside a write (temp file "
        f"left): {in_write}, kills after a complete write: {advanced}, versions written: {last}"
    )
    assert in_write >= WRITER_KILLS // 5 and advanced >= WRITER_KILLS // 5, (in_write, advanced)
    assert store.names() == ["happy"] and [t.name for t in store.list()] == ["happy"]
    # Dozens of stale temp files: never loaded, and the daemon starts cleanly with the right keyword.
    config = write_config(tmp_path, random_model_path)
    sidecar = json.loads(random_model_path.with_suffix(".json").read_text())
    store.add(
        Template("happy", embedding, sidecar["model_sha256"], sidecar["frontend_fingerprint"], takes=last + 1)
    )
    starts_cleanly(config, tmp_path, ["happy"])


def _valid_wav(path: Path) -> None:
    with wave.open(str(path), "rb") as reader:
        assert reader.getnframes() == 24000 and reader.getframerate() == 16000


@pytest.mark.slow  # tens of seconds on a loaded 2-core machine
def test_daemon_killed_at_random_moments_restarts_cleanly(
    random_model_path: Path, keyword_stream: KeywordStream, tmp_path: Path
) -> None:
    """The daemon writes detection audio while it runs; killed anywhere, it leaves the keywords alone."""
    from edge.audio import load_audio
    from training.bench.soak_stream import to_pcm

    config = write_config(tmp_path, random_model_path, detector={"threshold": 0.7})
    assert (
        kws(
            "enroll", "happy", str(keyword_stream.keyword_clip), "--no-checks", "--config", str(config)
        ).returncode
        == 0
    )
    keywords = KeywordFolder(tmp_path / "state")
    before = keywords.snapshot()
    pcm = to_pcm(load_audio(keyword_stream.path))
    detections_dir = tmp_path / "state" / "detections"
    rng = np.random.default_rng(3)
    kills = 0
    for cycle in range(8):
        daemon = Daemon(config, tmp_path)
        try:
            if cycle % 2:  # after it is up, while it detects and saves the detection audio
                assert daemon.notify.wait_for("READY=1", 60)
                for start in range(0, len(pcm), 32000):
                    daemon.feed(pcm[start : start + 32000])
                    if daemon.of_kind("detection") and rng.uniform() < 0.5:
                        break
                time.sleep(rng.uniform(0, 0.05))
            else:  # anywhere in start-up
                time.sleep(rng.uniform(0, 0.8))
        finally:
            kills += daemon.process.poll() is None
            daemon.kill()
        assert keywords.snapshot() == before
        if (detections_dir / "happy.wav").exists():
            _valid_wav(detections_dir / "happy.wav")
        starts_cleanly(config, tmp_path, ["happy"])
    assert kills >= 6
