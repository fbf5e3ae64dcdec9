"""A crash at every step of a keyword write (between the write and the rename included), and a full disk.

The crash points are exact: the real command line runs with `os.replace` wrapped so that the process SIGKILLs
itself just before or just after its n-th rename. The full disk is a 64 KiB tmpfs in a private mount namespace
(`unshare --mount`, or a user namespace where root is not available), and a file-size limit (RLIMIT_FSIZE,
always available) in a second test: either way the command fails with one line that names the file, and the old
keyword is kept, whole.
"""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.board_harness import TAKES, env, error_line, kws, kws_command, starts_cleanly, write_config
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401
from tests.test_powercut import REJECT_AUDIO, KeywordFolder, _normalised, _reference

ENROLL = ("enroll", "happy", *map(str, TAKES), "--no-checks")
REJECT = ("reject", "happy", str(REJECT_AUDIO))

_CRASHING_CLI = """
import os, signal, sys
when, target = sys.argv[1], int(sys.argv[2])
calls, real_replace = [0], os.replace
def replace(source, destination):
    calls[0] += 1
    if calls[0] == target and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, destination)
    if calls[0] == target and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from edge.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _crash(config: Path, when: str, rename: int, *command: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _CRASHING_CLI, when, str(rename), *command, "--config", str(config)],
        capture_output=True, env=env(), check=False, timeout=120,
    )  # fmt: skip
    return result.returncode


# (command, rename to crash at, before/after it, what must be on disk afterwards)
CRASH_POINTS = [
    ("enroll", 1, "before", "old"),  # the .bak copy written, not yet renamed
    ("enroll", 1, "after", "old"),  # .bak in place, the new version not yet written
    ("enroll", 2, "before", "old"),  # the new version written and fsynced, not renamed
    ("enroll", 2, "after", "new"),  # renamed, the folder not yet fsynced
    ("reject", 2, "before", "old"),
    ("reject", 2, "after", "new"),
    ("remove", 1, "before", "old"),
    ("remove", 1, "after", "new"),
    ("enroll-new", 1, "before", "old"),  # a first enrollment: no file before
    ("enroll-new", 1, "after", "new"),
]


@pytest.mark.slow  # tens of seconds on a loaded 2-core machine
def test_a_crash_at_every_rename_leaves_old_or_new(random_model_path: Path, tmp_path: Path) -> None:
    enrolled = _reference(random_model_path, tmp_path / "ref1", *ENROLL)
    rejected_row = _reference(random_model_path, tmp_path / "ref2", *REJECT)["negatives"][-1]
    config = write_config(tmp_path, random_model_path)
    keywords = KeywordFolder(tmp_path / "state")
    for command, rename, when, expected in CRASH_POINTS:
        if command == "enroll-new":
            kws("remove", "happy", "--config", str(config))
            shutil.rmtree(keywords.folder)
            keywords.folder.mkdir()
        elif not (keywords.folder / "happy.json").is_file():
            assert kws(*ENROLL, "--config", str(config)).returncode == 0
        before = keywords.snapshot()
        temps_before = {p.name for p in keywords.folder.glob(".*.tmp")}
        arguments = {"enroll": ENROLL, "enroll-new": ENROLL, "reject": REJECT, "remove": ("remove", "happy")}
        new = [enrolled]
        if command == "reject":
            old = _normalised(before["happy.json"])
            new = [old | {"negatives": [*old["negatives"], rejected_row]}]
        code = _crash(config, when, rename, *arguments[command])
        assert code == -9, (command, rename, when, code)
        state = keywords.check(before, "happy", new, removal=command == "remove")
        assert state == expected, (command, rename, when, state)
        leftovers = {p.name for p in keywords.folder.glob(".*.tmp")} - temps_before
        if when == "before" and command != "remove":
            (temp,) = leftovers  # the complete file that was never renamed: ignored, never loaded
            if rename == 2 or command == "enroll-new":
                assert _normalised((keywords.folder / temp).read_bytes()) in new
        else:
            assert not leftovers
        listed = json.loads(kws("list", "--json", "--config", str(config)).stdout)
        assert [k["name"] for k in listed] == (
            ["happy"] if (keywords.folder / "happy.json").is_file() else []
        )
        if (command, rename, when) == ("enroll", 2, "before"):  # between the write and the rename
            starts_cleanly(config, tmp_path, ["happy"])
    # Running the command again after a crash finishes the job.
    assert kws(*REJECT, "--config", str(config)).returncode == 0
    starts_cleanly(config, tmp_path, ["happy"])


def _with_file_limit(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_file_size_limit_fails_clearly_and_keeps_the_old_keyword(
    random_model_path: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, random_model_path)
    keywords = KeywordFolder(tmp_path / "state")
    assert kws(*ENROLL, "--config", str(config)).returncode == 0
    before = keywords.snapshot()
    for command in (ENROLL, REJECT, ("enroll", "other", str(TAKES[0]), "--no-checks")):
        result = subprocess.run(
            kws_command(*command, "--config", str(config)), capture_output=True, text=True, env=env(),
            preexec_fn=_with_file_limit(256), check=False, timeout=120,
        )  # fmt: skip
        line = error_line(result)
        assert "keywords/" in line and "could not write it (File too large)" in line, line
        assert "previous version is unchanged" in line
        assert keywords.snapshot() == before and not list(keywords.folder.glob(".*.tmp"))
    assert kws(*REJECT, "--config", str(config)).returncode == 0  # with room again, it works


_FULL_TMPFS = """
import json, os, shutil, subprocess, sys
mount, state, config, command_json = sys.argv[1:5]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount], check=True)
shutil.copytree(state, os.path.join(mount, "state"))
with open(os.path.join(mount, "filler"), "wb", buffering=0) as filler:  # fill the rest, as far as it goes
    try:
        while True:
            filler.write(b"x" * 512)
    except OSError:
        pass
results = []
for command in json.loads(command_json):
    done = subprocess.run(command + ["--config", config], capture_output=True, text=True)
    results.append({"code": done.returncode, "stderr": done.stderr[-3000:], "stdout": done.stdout[-3000:]})
keywords = os.path.join(mount, "state", "keywords")
files = {name: open(os.path.join(keywords, name), "rb").read().decode() for name in sorted(os.listdir(keywords))}
print(json.dumps({"results": results, "files": files}))
"""


def _namespace_prefix() -> list[str] | None:
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        if shutil.which("unshare") and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


def test_a_full_disk_fails_clearly_and_the_daemon_keeps_running(
    random_model_path: Path, keyword_stream: KeywordStream, tmp_path: Path
) -> None:
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare --mount needs root or user namespaces)")
    mount = tmp_path / "disk"
    mount.mkdir()
    config = write_config(tmp_path, random_model_path, detector={"threshold": 0.7})
    assert (
        kws(
            "enroll", "happy", str(keyword_stream.keyword_clip), "--no-checks", "--config", str(config)
        ).returncode
        == 0
    )
    before = (tmp_path / "state" / "keywords" / "happy.json").read_text()
    disk_config = write_config(mount.parent / "disk_config", random_model_path, state={"dir": str(mount / "state")},
                               detector={"threshold": 0.7})  # fmt: skip
    commands = [
        kws_command("enroll", "happy", str(keyword_stream.keyword_clip), "--no-checks", "--threshold", "0.8"),
        kws_command("reject", "happy", str(REJECT_AUDIO)),
        kws_command("enroll", "second", *map(str, TAKES), "--no-checks"),
        kws_command("run", "--file", str(keyword_stream.path)),
    ]
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _FULL_TMPFS, str(mount), str(tmp_path / "state"), str(disk_config),
         json.dumps(commands)],
        capture_output=True, text=True, env=env(), check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    *writes, run = report["results"]
    for result in writes:
        line = error_line(subprocess.CompletedProcess([], result["code"], result["stdout"], result["stderr"]))
        assert "could not write it (No space left on device)" in line and "keywords/" in line, line
    assert report["files"] == {"happy.json": before}  # the old keyword, whole; nothing half-written beside it
    assert run["code"] == 0 and "Traceback" not in run["stderr"], run["stderr"]
    events = [json.loads(line) for line in run["stdout"].splitlines() if line.startswith("{")]
    assert len([e for e in events if e["event"] == "detection"]) == 3
    assert "could not keep the detection audio" in run["stderr"]
    assert os.listdir(mount) == []  # the tmpfs lived in the namespace only
