"""The worker side of the Kokoro corpus: render a task's words for their speakers and ASR-check the clips.

Each worker process holds one Kokoro session and one Whisper tiny.en. A task is several words, each with its
speakers; the n-th speaker's clips of all the task's words (different words) are joined by silence and heard
in one Whisper pass, which costs about a fifth of hearing each clip alone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import TARGET_RATE, load_audio, resample
from training.data.corpus_io import clip_seconds_if_valid, trim_silence, write_flac_atomic
from training.data.kokoro_engine import KOKORO_RATE, KokoroVoice

__all__ = ["ASR_GAP_SECONDS", "DATASET", "LICENSE", "Task", "new_timing", "render_chunk", "worker_init"]

log = logging.getLogger(__name__)

DATASET = "kokoro"
LICENSE = "synthetic-kokoro-82M-Apache-2.0"
TIMING_KEYS = ("render_s", "asr_s", "rendered", "kept_existing", "failed", "asr_fallbacks", "asr_clips_alone")

# Worker state: one Kokoro session and one Whisper per process.
_ENGINE: Any = None
_ASR: Any = None


def worker_init(device: str) -> None:
    global _ENGINE, _ASR
    from training.data.asr import WhisperAsr
    from training.data.kokoro_engine import KokoroEngine

    _ENGINE = KokoroEngine(device=device)
    _ASR = WhisperAsr(device="cuda" if device == "cuda" else "cpu")


def _finish(audio: np.ndarray) -> np.ndarray:
    """24 kHz model output -> trimmed, peak-normalised (-1 dBFS) 16 kHz clip (empty when silent)."""
    clip = trim_silence(resample(np.asarray(audio, dtype=np.float32), KOKORO_RATE, TARGET_RATE))
    if clip.size == 0 or not np.isfinite(clip).all():
        return np.zeros(0, dtype=np.float32)
    return (clip * (0.89 / max(float(np.abs(clip).max()), 1e-6))).astype(np.float32)


# A task: ([(word, [(voice, split, speed)])], output dir, ASR filter on). Several words per task, so that the
# ASR can hear clips of different words in one pass.
Task = tuple[list[tuple[str, list[tuple[KokoroVoice, str, float]]]], str, bool]
ASR_GAP_SECONDS = 0.6


def _asr_group(words: Sequence[str], clips: Sequence[np.ndarray]) -> tuple[list[tuple[bool, str]], int, int]:
    """Whisper on clips of different words joined by silence: (verdicts, 1 when the sentence split did not match,
    clips heard alone).

    Whisper writes isolated words as sentences ("Apple. Garden."): when its sentences match the clips one to one,
    sentence i is what clip i said. Otherwise a second pass with word timestamps gives each heard word to the clip
    nearest its midpoint, and a clip left with no word is heard alone. On 96 clips of the first shard this agreed
    with hearing every clip alone on 83, at 0.22 s a clip instead of 0.99 s.
    """
    from training.data.asr import heard_as

    gap = np.zeros(round(ASR_GAP_SECONDS * TARGET_RATE), dtype=np.float32)
    joined = np.concatenate([gap, *[piece for clip in clips for piece in (clip, gap)]])
    sentences = [s.split() for s in re.split(r"[.!?]+", _ASR.text(joined)) if s.strip()]
    if len(clips) > 1 and len(sentences) == len(clips):
        return [heard_as(word, heard) for word, heard in zip(words, sentences, strict=True)], 0, 0
    spans, position = [], gap.shape[0]
    for clip in clips:
        spans.append((position / TARGET_RATE, (position + clip.shape[0]) / TARGET_RATE))
        position += clip.shape[0] + gap.shape[0]
    assigned: list[list[str]] = [[] for _ in clips]
    for heard in _ASR.words(joined) if len(clips) > 1 else []:
        middle = (heard.start + heard.end) / 2.0
        nearest = min(range(len(spans)), key=lambda i: max(spans[i][0] - middle, middle - spans[i][1], 0.0))
        assigned[nearest].append(heard.word)
    verdicts, alone = [], 0
    for word, clip, heard_words in zip(words, clips, assigned, strict=True):
        if not heard_words:
            heard_words, alone = _ASR.text(clip).split(), alone + 1
        verdicts.append(heard_as(word, heard_words))
    return verdicts, int(len(clips) > 1), alone


def new_timing() -> dict[str, float]:
    """The counters a shard's rendering reports (seconds and clip counts), all at zero."""
    return {key: 0.0 if key.endswith("_s") else 0 for key in TIMING_KEYS}


def render_chunk(task: Task) -> dict[str, Any]:
    """Render (or find on disk) each word of the task for its speakers; ASR-check the clips when asked."""
    items, output_dir, check = task
    root = Path(output_dir)
    timing = new_timing()
    done: list[tuple[int, str, KokoroVoice, str, float, np.ndarray, str | None]] = []
    decisions = []
    for word, speakers in items:
        for position, (voice, split, speed) in enumerate(speakers):
            kept, rejected = f"clips/{word}/{voice.slug}.flac", f"rejected/{word}/{voice.slug}.flac"
            existing = next((p for p in (kept, rejected) if clip_seconds_if_valid(root / p)), None)
            if existing is not None:
                audio = load_audio(root / existing, TARGET_RATE)
                timing["kept_existing"] += 1
            else:
                started = time.perf_counter()
                try:
                    audio = _finish(_ENGINE.render(word, voice, speed))
                except Exception as error:  # one rendition's failure costs that clip, not the shard
                    audio = np.zeros(0, dtype=np.float32)
                    log.warning("kokoro %s %r: %s", voice.name, word, error)
                timing["render_s"] += time.perf_counter() - started
                if audio.size == 0:
                    timing["failed"] += 1
                    decisions.append(
                        {"word": word, "speaker": voice.name, "keep": False, "reason": "no audio"}
                    )
                    continue
                timing["rendered"] += 1
            done.append((position, word, voice, split, speed, audio, existing))
    verdicts: dict[int, tuple[bool, str]] = {i: (True, "not checked") for i in range(len(done))}
    if check:
        started = time.perf_counter()
        by_position: dict[int, list[int]] = {}
        for index, item in enumerate(done):  # the n-th speaker of every word: clips of different words
            by_position.setdefault(item[0], []).append(index)
        for group in by_position.values():
            results, fell_back, alone = _asr_group([done[i][1] for i in group], [done[i][5] for i in group])
            timing["asr_fallbacks"] += fell_back
            timing["asr_clips_alone"] += alone
            verdicts.update(zip(group, results, strict=True))
        timing["asr_s"] += time.perf_counter() - started
    rows = []
    for index, (_, word, voice, split, speed, audio, existing) in enumerate(done):
        keep, reason = verdicts[index]
        relative = f"{'clips' if keep else 'rejected'}/{word}/{voice.slug}.flac"
        if existing != relative:
            write_flac_atomic(root / relative, audio)
            if existing is not None:
                (root / existing).unlink(missing_ok=True)
        decisions.append({"word": word, "speaker": voice.name, "keep": keep, "reason": reason})
        if keep:
            rows.append(
                {
                    "path": relative,
                    "dataset": DATASET,
                    "word": word,
                    "speaker": voice.name,
                    "take": f"speed{speed:.3f}",
                    "split": split,
                    "sample_rate": TARGET_RATE,
                    "seconds": f"{audio.shape[0] / TARGET_RATE:.4f}",
                    "license": LICENSE,
                }
            )
    return {"rows": rows, "decisions": decisions, "timing": timing, "words": len(items)}
