"""Fuzzing `kws-edge` as a user meets it: every command with damaged input ends in status 2 and one error line.

In process, hypothesis hands random, empty, damaged-audio, JSON-ish and .npy files to every command that reads
a file; the command returns 0 or 2 and never raises. A sample runs as real processes, where the whole of
stderr is checked: one `ERROR` line that names the file, no traceback. Regression tests for the bugs found
follow.
"""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import io
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli import main as kws_main
from tests.board_harness import DEMO, error_line, kws
from tests.edge_fixtures import random_model_path  # noqa: F401

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TAKE = DEMO / "enroll_happy_1.wav"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


contents = st.one_of(
    st.binary(max_size=400),
    st.just(b""),
    st.builds(
        lambda cut, patch: TAKE.read_bytes()[:cut] + patch, st.integers(0, 3000), st.binary(max_size=8)
    ),
    st.sampled_from(
        [
            {},
            [],
            None,
            "x",
            {"keyword": 5},
            {"keyword": "happy", "events": 5},
            {"keyword": "happy", "events": [{"word": "happy"}]},
        ]
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([np.zeros((2, 24000), np.float32), np.zeros(3), np.zeros((1, 5), np.float32)]).map(_npy),
)
COMMANDS = [
    ("enroll", "happy", "{f}", "--no-checks"),
    ("replay", str(TAKE), "--truth", "{f}"),
    ("replay", "{f}"),
    ("reject", "happy", "{f}"),
    ("features", "{f}"),
    ("embed", "--input", "{f}", "--output", "{out}.npy"),
    ("embed", "{f}", "--out", "{out}.npz"),
    ("run", "--file", "{f}", "--no-gpio"),
]


@pytest.fixture(scope="module")
def state(random_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    assert kws_main(["enroll", "happy", str(TAKE), "--no-checks", "--model", str(random_model_path),
                     "--state-dir", str(folder)]) == 0  # fmt: skip
    return folder


@FUZZ
@given(
    command=st.sampled_from(COMMANDS),
    suffix=st.sampled_from([".wav", ".flac", ".json", ".npy"]),
    data=contents,
)
def test_every_command_with_any_file_returns_0_or_2(
    random_model_path: Path, state: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    command: tuple[str, ...], suffix: str, data: bytes,
) -> None:  # fmt: skip
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    argv = [part.format(f=path, out=folder / "out") for part in command]
    if argv[0] != "features":
        argv += ["--model", str(random_model_path)]
    if argv[0] not in ("features", "embed"):
        argv += ["--state-dir", str(state)]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="kws-edge"):
        code = kws_main(argv)
    errors = [r.getMessage() for r in caplog.records if r.name == "kws-edge"]
    assert code in (0, 2) and len(errors) == (code == 2), (argv, code, errors)
    assert all("\n" not in message for message in errors)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("enroll", "happy", "{cut}", "--no-checks"), "cut.wav"),
        (("replay", "{take}", "--truth", "{garbage}"), "garbage.json"),
        (("embed", "--input", "{garbage}", "--output", "{tmp}/e.npy"), "garbage.json"),
        (("reject", "happy", "{rate}"), "rate.wav"),
        (("run", "--no-gpio", "--file", "{cut}"), "cut.wav"),
        (("remove", "nothing"), "nothing"),
    ],
)
def test_a_user_sees_one_line_naming_the_problem(
    random_model_path: Path, state: Path, tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    (tmp_path / "cut.wav").write_bytes(TAKE.read_bytes()[:30])
    (tmp_path / "garbage.json").write_bytes(b'{"keyword": "happy"')
    rate = bytearray(TAKE.read_bytes())
    rate[24:28] = (0x7FFFFFFF).to_bytes(4, "little")
    (tmp_path / "rate.wav").write_bytes(bytes(rate))
    files = {"cut": tmp_path / "cut.wav", "garbage": tmp_path / "garbage.json", "rate": tmp_path / "rate.wav"}
    argv = [a.format(take=TAKE, tmp=tmp_path, **files) for a in args]
    extra = [] if argv[0] == "remove" else ["--model", str(random_model_path)]
    result = kws(*argv, *extra, "--state-dir", str(state)) if argv[0] != "embed" else kws(*argv, *extra)
    assert named in error_line(result)


# ---------------------------------------------------------------- regressions of the bugs the fuzzing found


def test_embed_input_that_is_not_npy(
    random_model_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """np.load raised EOFError (an empty file), and an .npz file an AttributeError: both escaped as tracebacks."""
    (tmp_path / "empty.npy").write_bytes(b"")
    with caplog.at_level(logging.ERROR, logger="kws-edge"):
        assert kws_main(["embed", "--model", str(random_model_path), "--input", str(tmp_path / "empty.npy"),
                         "--output", str(tmp_path / "e.npy")]) == 2  # fmt: skip
    assert "empty.npy: not a .npy array of windows" in caplog.text
    np.savez(
        tmp_path / "windows.npz", w=np.zeros((1, 24000), np.float32)
    )  # loads as a mapping: AttributeError
    assert kws_main(["embed", "--model", str(random_model_path), "--input", str(tmp_path / "windows.npz"),
                     "--output", str(tmp_path / "e.npy")]) == 2  # fmt: skip
    assert "windows.npz: expected float32 windows [N, 24000], got NpzFile" in caplog.text


@pytest.mark.parametrize(
    "truth", ['{"keyword": "happy"}', '"x"', '{"keyword": "happy", "events": [{"word": "happy"}]}', "{"]
)
def test_replay_truth_that_is_not_a_truth_file(
    random_model_path: Path, state: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, truth: str
) -> None:
    """KeyError and TypeError escaped (tracebacks); bad JSON said 'Expecting value' without the file."""
    (tmp_path / "truth.json").write_text(truth)
    with caplog.at_level(logging.ERROR, logger="kws-edge"):
        assert kws_main(["replay", str(TAKE), "--truth", str(tmp_path / "truth.json"), "--model",
                         str(random_model_path), "--state-dir", str(state)]) == 2  # fmt: skip
    assert "truth.json: not a ground-truth file" in caplog.text
