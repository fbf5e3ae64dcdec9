"""ONNX -> TensorFlow saved model with onnx2tf, run as a child process so its log can be captured and shown.

onnx2tf turns NCW/NCHW graphs into NWC/NHWC ones and, for a 3-D input, would transpose `[1, frames, 40]`
into `[1, 40, frames]`; `-kat features` (keep_shape_absolutely_input_names) keeps the input exactly as the
torch model and the board see it. `-osd` (signature defs) is needed because torch's node names (`/dw/Conv`)
are not valid TensorFlow op names. onnx2tf runs `onnxsim` as a command, so the interpreter's bin folder is
put first on PATH.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["Onnx2TfError", "onnx_to_saved_model"]

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOISE = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard", "rebuild TensorFlow")


class Onnx2TfError(RuntimeError):
    """onnx2tf failed; the message holds the relevant part of its log."""


def _relevant_log(text: str) -> str:
    """onnx2tf's own ERROR lines, then the end of its log (where the final exception is)."""
    lines = [_ANSI.sub("", line) for line in text.splitlines()]
    lines = [line for line in lines if line.strip() and not any(noise in line for noise in _NOISE)]
    tail = lines[-LOG_TAIL_LINES // 2 :]
    errors = [line for line in lines[: len(lines) - len(tail)] if line.lstrip().startswith("ERROR")]
    if not errors:
        return "\n".join(lines[-LOG_TAIL_LINES:])
    return "\n".join([*errors[: LOG_TAIL_LINES // 2], "... end of the log:", *tail])


def onnx_to_saved_model(
    onnx_path: Path, out_dir: Path, input_name: str = "features", timeout_s: float = 600.0
) -> Path:
    """Convert `onnx_path` to a saved model in `out_dir` (replaced); raise Onnx2TfError with its log."""
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file (run `kws-convert export` first)")
    try:
        import onnx

        onnx.checker.check_model(onnx.load(str(onnx_path)))
    except Exception as error:  # protobuf DecodeError, ValidationError, ...
        raise ValueError(f"{onnx_path}: not a valid ONNX model ({type(error).__name__}: {error})") from error
    staging = out_dir.parent / f".{out_dir.name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    # onnx2tf runs onnxsim on its input file in place: hand it a copy so the exported file stays as exported.
    scratch = Path(tempfile.mkdtemp(prefix="udkws-onnx2tf-"))
    onnx_copy = scratch / onnx_path.name
    shutil.copyfile(onnx_path, onnx_copy)
    command = [
        sys.executable,
        "-m",
        "onnx2tf",
        "-i",
        str(onnx_copy),
        "-o",
        str(staging),
        "-osd",
        "-kat",
        input_name,
        "-v",
        "info",
    ]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise Onnx2TfError(f"onnx2tf on {onnx_path} ran past {timeout_s:.0f} s") from error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    output = (result.stdout or "") + "\n" + (result.stderr or "")
    saved_model = staging / "saved_model.pb"
    if result.returncode != 0 or not saved_model.is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise Onnx2TfError(
            f"onnx2tf failed on {onnx_path} (exit {result.returncode}); its log:\n{_relevant_log(output)}"
        )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    log.info("onnx2tf: %s -> %s in %.1f s", onnx_path, out_dir, time.perf_counter() - started)
    return out_dir
