"""A small RANDOM int8 TFLite encoder with a contract sidecar, for tests of the edge runtime.

It is a real model (Keras -> TFLiteConverter full int8, calibrated on real normalised MFCC windows from the
training corpora, never gsc_v2_test) with random weights: it exercises every step the board runs, but its
embeddings carry no keyword knowledge. The built pair is cached under cache/edge_test_model/ (git-ignored),
keyed by this file's build parameters, so the TensorFlow conversion runs once per machine.

Also runnable: `python -m tests.edge_fixtures OUT_DIR` writes `udkws_int8.tflite` + `.json` into OUT_DIR
(the demo uses it until the shipped model exists).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.audio import load_audio
from edge.frontend import DEFAULT_CONFIG, mfcc
from edge.model import file_sha256

REPO = Path(__file__).resolve().parents[1]
WINDOW_SAMPLES = 24000
FRAMES = 148
EMBEDDING_DIM = 32
SEED = 1234
CALIBRATION_DATASETS = ("gsc_v1_words", "arabic_sc", "dspspeech20")
BUILD_KEY = f"v4-{WINDOW_SAMPLES}-{FRAMES}-{EMBEDDING_DIM}-{SEED}-{DEFAULT_CONFIG.fingerprint}"
MODEL_NAME = "udkws_int8.tflite"


def data_dir_or_none() -> Path | None:
    configured = os.environ.get("KWS_DATA_DIR")
    candidate = Path(configured) if configured else REPO.parent / "shared" / "data"
    return candidate if (candidate / "manifest.csv").is_file() else None


def fit_window(audio: np.ndarray, length: int = WINDOW_SAMPLES) -> np.ndarray:
    """Centre a clip in a window of `length` samples (zero padding, or the central part when longer)."""
    if audio.shape[0] >= length:
        start = (audio.shape[0] - length) // 2
        return audio[start : start + length].astype(np.float32)
    out = np.zeros(length, dtype=np.float32)
    start = (length - audio.shape[0]) // 2
    out[start : start + audio.shape[0]] = audio
    return out


def calibration_windows(data_dir: Path, count: int = 48) -> np.ndarray:
    """Real training-corpus clips (train split), each centred in a 1.5 s window: float32 [count, L]."""
    rows: list[dict[str, str]] = []
    with open(data_dir / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["dataset"] in CALIBRATION_DATASETS and row["split"] == "train":
                rows.append(row)
    rng = np.random.default_rng(SEED)
    picked = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
    return np.stack([fit_window(load_audio(data_dir / rows[i]["path"])) for i in sorted(picked)])


def build_random_model(out_dir: Path, data_dir: Path) -> Path:
    """Write a random full-int8 encoder `udkws_int8.tflite` and its sidecar into out_dir; return the model path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    windows = calibration_windows(data_dir)
    features = np.stack([mfcc(w) for w in windows])
    mean = features.mean(axis=(0, 1)).astype(np.float32)
    std = (features.std(axis=(0, 1)) + 1e-3).astype(np.float32)
    normalized = ((features - mean) / std).astype(np.float32)

    inputs = tf.keras.Input(shape=(FRAMES, 40), batch_size=1)
    x = tf.keras.layers.Conv1D(24, 5, strides=1, activation="tanh")(inputs)
    x = tf.keras.layers.Conv1D(32, 3, strides=1, activation="tanh")(x)
    x = tf.keras.layers.Conv1D(32, 3, strides=1, activation="tanh")(x)
    x = tf.keras.layers.GlobalAveragePooling1D()(x)
    outputs = tf.keras.layers.Dense(EMBEDDING_DIM)(x)
    model = tf.keras.Model(inputs, outputs)

    def representative() -> object:
        for row in normalized:
            yield [row[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    tflite_bytes = converter.convert()

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_NAME
    model_path.write_bytes(tflite_bytes)

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    in_scale, in_zero = interpreter.get_input_details()[0]["quantization"]
    out_scale, out_zero = interpreter.get_output_details()[0]["quantization"]
    sidecar = {
        "format": "udkws-model/1",
        "model_file": MODEL_NAME,
        "model_sha256": file_sha256(model_path),
        "checkpoint_sha256": hashlib.sha256(BUILD_KEY.encode()).hexdigest(),
        "model_name": "random_test_encoder",
        "frontend": DEFAULT_CONFIG.to_dict(),
        "frontend_fingerprint": DEFAULT_CONFIG.fingerprint,
        "window_seconds": WINDOW_SAMPLES / 16000,
        "window_samples": WINDOW_SAMPLES,
        "frames": FRAMES,
        "n_mfcc": 40,
        "embedding_dim": EMBEDDING_DIM,
        "feature_mean": [float(v) for v in mean],
        "feature_std": [float(v) for v in std],
        "input_quantization": {"scale": float(in_scale), "zero_point": int(in_zero)},
        "output_quantization": {"scale": float(out_scale), "zero_point": int(out_zero)},
        "vocabulary": {},
        "teacher": None,
        "verification": {"note": "random weights: a test model, not for use"},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (out_dir / "udkws_int8.json").write_text(json.dumps(sidecar, indent=1))
    return model_path


def cached_random_model(data_dir: Path) -> Path:
    """The random model, built once per machine under cache/edge_test_model/<key>/."""
    target = REPO / "cache" / "edge_test_model" / BUILD_KEY
    model_path = target / MODEL_NAME
    if model_path.is_file() and (target / "udkws_int8.json").is_file():
        return model_path
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    build_random_model(staging, data_dir)
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return model_path


@pytest.fixture(scope="session")
def random_model_path(kws_data_dir: Path) -> Path:
    return cached_random_model(kws_data_dir)


@pytest.fixture
def model_copy(random_model_path: Path, tmp_path: Path) -> Path:
    """A private copy of the model pair that a test may corrupt."""
    for name in (MODEL_NAME, "udkws_int8.json"):
        shutil.copy(random_model_path.parent / name, tmp_path / name)
    return tmp_path / MODEL_NAME


if __name__ == "__main__":
    found = data_dir_or_none()
    if found is None:
        sys.exit("speech data not found: set KWS_DATA_DIR")
    destination = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "cache" / "demo_model"
    built = cached_random_model(found)
    destination.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_NAME, "udkws_int8.json"):
        shutil.copy(built.parent / name, destination / name)
    print(destination / MODEL_NAME)


@dataclass(frozen=True)
class KeywordStream:
    """A test recording: one real clip repeated at known times among other real words, over quiet noise."""

    path: Path
    keyword_clip: Path
    keyword_times: list[tuple[float, float]]  # (start_s, end_s) of each keyword copy
    other_times: list[tuple[float, float]]


def _clip_rows(data_dir: Path) -> list[dict[str, str]]:
    with open(data_dir / "manifest.csv", newline="") as handle:
        return [
            r for r in csv.DictReader(handle) if r["dataset"] == "gsc_v1_words" and r["split"] == "training"
        ]


def build_keyword_stream(data_dir: Path, out: Path, seconds: float = 16.0) -> KeywordStream:
    """Keyword copies at 1.5, 7.5 and 13.5 s; three other words (other speakers) at 4.5, 10.5 and 15 s."""
    from edge.audio import write_wav

    rows = _clip_rows(data_dir)
    keyword = next(r for r in rows if r["word"] == "happy")
    others = [r for r in rows if r["word"] in ("bed", "cat") and r["speaker"] != keyword["speaker"]][:3]
    stream = np.zeros(int(seconds * 16000), dtype=np.float32)  # digital silence, as around a file take
    keyword_audio = load_audio(data_dir / keyword["path"])
    keyword_times, other_times = [], []
    for start in (1.5, 7.5, 13.5):
        offset = int(start * 16000)
        stream[offset : offset + keyword_audio.shape[0]] += keyword_audio
        keyword_times.append((start, start + keyword_audio.shape[0] / 16000))
    for start, row in zip((4.5, 10.5, 15.0), others, strict=True):
        clip = load_audio(data_dir / row["path"])[: int((seconds - start) * 16000)]
        offset = int(start * 16000)
        stream[offset : offset + clip.shape[0]] += clip
        other_times.append((start, start + clip.shape[0] / 16000))
    write_wav(out, stream)
    return KeywordStream(out, data_dir / keyword["path"], keyword_times, other_times)


@pytest.fixture(scope="session")
def keyword_stream(kws_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> KeywordStream:
    return build_keyword_stream(kws_data_dir, tmp_path_factory.mktemp("stream") / "stream.wav")
