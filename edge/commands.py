"""The work behind `kws-edge` subcommands that manage keywords and replay audio (the parser is in cli.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.audio import load_audio
from edge.config import Config, DetectorConfig
from edge.daemon import detection_audio_path
from edge.detector import Detection, Detector, WindowResult
from edge.model import Encoder, load_model
from edge.resolver import Resolved
from edge.takes import (
    PHRASE_MAX_SAMPLES,
    Segment,
    TakeChecks,
    TakeWindows,
    VadConfig,
    VoiceActivityCutter,
    check_consistency,
    check_signal,
    make_template,
    take_windows,
)
from edge.templates import Template, TemplateStore

__all__ = [
    "cut_take",
    "describe_keywords",
    "embed_files",
    "enroll_from_audio",
    "enrollment_report",
    "record_takes",
    "reject",
    "replay",
    "score_against_truth",
    "stream_embeddings",
    "take_from_audio",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
SAMPLE_RATE = 16000


def open_model(config: Config) -> Encoder:
    return load_model(config.model.path, num_threads=config.model.num_threads)


def cut_take(
    audio: FloatArray, window_samples: int, checks: TakeChecks | None, what: str, hop_samples: int = 1600
) -> TakeWindows:
    """Cut the utterance (a word, or a phrase up to 2.5 s) out of a recording by voice activity: its windows.

    With `checks`, a bad take (too quiet, clipped, too short, too long) raises ValueError naming `what`.
    """
    cutter = VoiceActivityCutter(PHRASE_MAX_SAMPLES, audio.shape[0] + SAMPLE_RATE, VadConfig())
    # Silence after the file closes an utterance that runs to its end.
    segment = cutter.push(np.concatenate([audio, np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]))
    recording = cutter.recording
    if segment is None:
        # No onset found (speech from the first frame, or no quiet lead-in): take the whole file as the cut.
        segment = Segment(0, audio.shape[0], 0, audio.shape[0], too_long=audio.shape[0] > PHRASE_MAX_SAMPLES)
        recording = audio
    if checks is not None:
        problem = check_signal(recording, segment, checks)
        if problem is not None:
            raise ValueError(f"{what}: take refused ({problem})")
    return take_windows(recording, segment, window_samples, hop_samples)


def take_from_audio(
    audio: FloatArray, window_samples: int, checks: TakeChecks | None, what: str
) -> FloatArray:
    """The model window centred on the utterance of a recording (see `cut_take`)."""
    return cut_take(audio, window_samples, checks, what).centred


def enroll_from_audio(
    name: str,
    takes: Sequence[tuple[str, FloatArray]],
    encoder: Encoder,
    store: TemplateStore,
    threshold: float | None = None,
    pin: int | None = None,
    hook: str | None = None,
    check: bool = True,
) -> Template:
    """Make and save a keyword from recordings (label, 16 kHz audio): VAD cut, checks, mean embedding."""
    if not takes:
        raise ValueError(f"enroll {name}: no takes given")
    checks = TakeChecks() if check else None
    cuts = [cut_take(audio, encoder.window_samples, checks, label) for label, audio in takes]
    embeddings = encoder.embed_windows(np.stack([c.centred for c in cuts]))
    if checks is not None:
        outlier = check_consistency(embeddings, checks.consistency_threshold)
        if outlier is not None:
            index, score = outlier
            raise ValueError(
                f"{takes[index][0]}: take refused (inconsistent with the other takes: cosine {score:.2f} to "
                "their mean); record it again, or pass --no-checks"
            )
    template = make_template(name, cuts, embeddings, encoder, threshold=threshold, pin=pin, hook=hook)
    store.add(template)
    return template


def record_takes(count: int, name: str, config: Config, window_samples: int) -> list[tuple[str, FloatArray]]:
    """Record `count` takes from the microphone, each cut by voice activity (CLI enrollment without files)."""
    from edge.sources import MicSource

    source = MicSource(config.audio.device, config.audio.sample_rate, config.audio.chunk_ms)
    takes = []
    try:
        for take in range(1, count + 1):
            print(f"take {take}/{count}: say {name!r} now", flush=True)
            cutter = VoiceActivityCutter(PHRASE_MAX_SAMPLES, 6 * 16000, VadConfig())
            segment = None
            while segment is None and cutter.recording.shape[0] < 6 * 16000:
                chunk = source.read()
                if chunk is not None and chunk.size:
                    segment = cutter.push(chunk)
            if segment is None:
                raise ValueError(f"take {take}: no speech heard in 6 s")
            takes.append((f"take {take}", cutter.recording[segment.start : segment.end]))
    finally:
        source.close()
    return takes


def describe_keywords(
    templates: Sequence[Template], as_json: bool, resolved: Sequence[Resolved] | None = None
) -> str:
    """`kws-edge list` output: one line per keyword, or one JSON array (without the vectors).

    With `resolved` (the same keywords as the detector would use them), the threshold in force and, for a
    budgeted one, its expected false alarms per hour."""
    in_force = {r.template.name: r for r in resolved or ()}
    if as_json:
        rows = []
        for t in templates:
            row = {
                k: v
                for k, v in t.to_json().items()
                if k not in ("embedding", "negatives", "take_embeddings", "take_speech")
            }
            row["negatives"] = t.negatives.shape[0]
            if t.name in in_force:
                row["in_force"] = in_force[t.name].as_event()
            rows.append(row)
        return json.dumps(rows)
    lines = []
    for t in templates:
        threshold = "default" if t.threshold is None else f"{t.threshold:.3f}"
        if t.name in in_force:
            threshold = _threshold_text(in_force[t.name])
        lines.append(
            f"{t.name}: {t.takes} takes, {t.negatives.shape[0]} negatives, threshold {threshold}, pin {t.pin}, "
            f"hook {t.hook!r}, created {t.created}, model {t.model_sha256[:12]}"
        )
    return "\n".join(lines)


def _threshold_text(resolved: Resolved) -> str:
    threshold = f"{resolved.template.threshold:.3f}"
    if resolved.budget is not None:
        budget = resolved.budget
        return (
            f"{threshold}, set for at most {budget.budget_per_hour:g} false alarms an hour (the cohort's "
            f"estimate at this threshold: {budget.expected_per_hour:.2f}/h)"
        )
    return f"{threshold} ({'set at enrollment' if resolved.threshold_source == 'keyword' else 'detector.threshold'})"


def enrollment_report(resolved: Resolved) -> str:
    """What `kws-edge enroll` says after saving: the threshold in force, the expected false alarms, a warning."""
    lines = [f"threshold {_threshold_text(resolved)}"]
    if resolved.budget is not None and resolved.budget.warning:
        lines.append(f"warning: {resolved.budget.warning}")
    spread = resolved.template.take_spread
    if resolved.second_look:
        lines.append(
            f"second look on: the takes agree closely ({spread:.1f}), so a window a look-alike would veto is kept "
            f"when it follows one of them within {resolved.second_look_within or 0.0:.1f}"
        )
    elif spread is not None and resolved.template.take_speech:
        lines.append(
            f"second look off: the takes' spread {spread:.1f} is over detector.take_match_spread (or that is 0); "
            "takes said the same way by one person usually agree within 4-6"
        )
    return "\n".join(lines)


def _fit(audio: FloatArray, length: int) -> FloatArray:
    if audio.shape[0] >= length:
        start = (audio.shape[0] - length) // 2
        return audio[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    out[(length - audio.shape[0]) // 2 :][: audio.shape[0]] = audio
    return out


def reject(name: str, files: Sequence[Path], encoder: Encoder, store: TemplateStore, state_dir: str) -> int:
    """Add negative templates to `name`: from files, or from the audio of its last detection."""
    if not files:
        last = detection_audio_path(state_dir, name)
        if not last.is_file():
            raise FileNotFoundError(
                f"{last}: no recorded detection of {name!r} to reject; pass audio files instead"
            )
        files = [last]
    windows = np.stack([_fit(load_audio(path), encoder.window_samples) for path in files])
    store.add_negative(name, encoder.embed_windows(windows))
    return len(files)


@dataclass(frozen=True)
class ReplayResult:
    detections: list[Detection]
    seconds: float
    windows: int
    windows_gated: int


def replay(
    audio: FloatArray,
    encoder: Encoder,
    templates: Sequence[Template],
    settings: DetectorConfig,
    chunk_samples: int = 1600,
) -> ReplayResult:
    """Run the daemon's detector over a whole recording, chunk by chunk, as the live loop does."""
    detector = Detector(encoder, templates, settings)
    detections: list[Detection] = []
    for start in range(0, audio.shape[0], chunk_samples):
        detections.extend(detector.push(audio[start : start + chunk_samples]))
    return ReplayResult(
        detections, audio.shape[0] / SAMPLE_RATE, detector.windows_evaluated, detector.windows_gated
    )


def stream_embeddings(
    encoder: Encoder,
    audio: FloatArray,
    settings: DetectorConfig,
    on_chunk: Callable[[], None] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], FloatArray]:
    """Every window's embedding of a recording as the daemon's detector computes them (100 ms chunks): the
    windows' end samples, whether the energy gate skipped them, and the embeddings (zeros where gated)."""
    ends: list[int] = []
    gated: list[bool] = []
    vectors: list[FloatArray] = []
    nothing = np.zeros(encoder.embedding_dim, dtype=np.float32)

    def keep(result: WindowResult) -> None:
        ends.append(result.end_sample)
        gated.append(result.gated)
        vectors.append(nothing if result.embedding is None else result.embedding)

    detector = Detector(encoder, (), settings, on_window=keep)
    for start in range(0, audio.shape[0], 1600):
        detector.push(audio[start : start + 1600])
        if on_chunk is not None:
            on_chunk()
    embeddings = np.stack(vectors) if vectors else np.zeros((0, encoder.embedding_dim), dtype=np.float32)
    return np.asarray(ends, dtype=np.int64), np.asarray(gated, dtype=bool), embeddings


def embed_files(files: Sequence[Path], encoder: Encoder, hop_ms: int) -> dict[str, Any]:
    """Every window's embedding of each file, computed by the daemon's detector (streaming MFCC, gate off)."""
    embeddings: list[FloatArray] = []
    starts: list[npt.NDArray[np.float64]] = []
    file_index: list[npt.NDArray[np.int32]] = []
    for index, path in enumerate(files):
        ends, _, vectors = stream_embeddings(
            encoder, load_audio(path), DetectorConfig(hop_ms=hop_ms, gate=False)
        )
        if not ends.size:
            log.warning(
                "%s: shorter than one model window (%d samples): no embedding", path, encoder.window_samples
            )
        embeddings.append(vectors)
        starts.append((ends - encoder.window_samples) / SAMPLE_RATE)
        file_index.append(np.full(ends.shape[0], index, dtype=np.int32))
    dim = encoder.embedding_dim
    return {
        "embeddings": np.concatenate(embeddings) if embeddings else np.zeros((0, dim), dtype=np.float32),
        "start_s": np.concatenate(starts) if starts else np.zeros(0, dtype=np.float64),
        "file_index": np.concatenate(file_index) if file_index else np.zeros(0, dtype=np.int32),
        "files": np.array([str(f) for f in files]),
        "window_samples": np.array(encoder.window_samples),
        "model_sha256": np.array(encoder.sha256),
    }


def _read_truth(path: Path) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    """The truth file, its keyword and that keyword's events; ValueError naming the file when it is not one."""
    try:
        truth = json.loads(path.read_text())
        keyword = truth["keyword"]
        targets = [e for e in truth["events"] if e["word"] == keyword]
        for event in targets:
            float(event["start_s"]), float(event["end_s"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path}: not a ground-truth file ({type(error).__name__}: {error}); expected "
            '{"keyword": K, "events": [{"word": W, "start_s": S, "end_s": E}, ...]}'
        ) from error
    return truth, keyword, targets


def score_against_truth(
    detection_times_s: Sequence[float], truth_path: Path, window_s: float
) -> dict[str, Any]:
    """Compare detection times with a ground-truth JSON ({"keyword": k, "events": [{"word", "start_s", "end_s"}]}).

    A detection (made at the end of its window) is a hit when a keyword utterance overlaps its window
    (time - window_s, time]; each utterance counts once. Every other detection is a false alarm.
    """
    truth, keyword, targets = _read_truth(truth_path)
    matched: set[int] = set()
    false_alarms = []
    for end in detection_times_s:
        found = next(
            (
                i
                for i, e in enumerate(targets)
                if i not in matched and e["start_s"] < end and e["end_s"] > end - window_s
            ),
            None,
        )
        if found is None:
            false_alarms.append(round(end, 3))
        else:
            matched.add(found)
    return {
        "keyword": keyword,
        "utterances": len(targets),
        "detected": len(matched),
        "missed_at_s": [t["start_s"] for i, t in enumerate(targets) if i not in matched],
        "false_alarms": len(false_alarms),
        "false_alarms_at_s": false_alarms,
        "other_words": len(truth["events"]) - len(targets),
        "audio_s": truth.get("seconds"),
    }
