"""Streaming detection: MFCC frames -> one model window every hop -> cosine against each keyword.

All timing is on the audio sample clock (samples pushed so far), so replaying a file gives exactly the
detections a live run over the same audio would give. Per window: an energy gate may skip the encoder on
silence; otherwise the L2-normalised embedding is scored against every template (cosine); a keyword's window
counts as a hit when its score reaches its threshold and no negative template of that keyword (audio marked as
a false trigger) resembles the window more than the keyword does. A detection needs `trigger_level` hits among
the last `trigger_window` windows, after which that keyword is silent for the refractory period.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.budget import veto_mask
from edge.config import DetectorConfig
from edge.frontend import DEFAULT_CONFIG, StreamingMfcc
from edge.model import Encoder
from edge.takematch import best_distance, look_distance, match_features
from edge.templates import Template

__all__ = ["Detection", "Detector", "KeywordMatcher", "TriggerSmoother", "WindowResult"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
SAMPLE_RATE = DEFAULT_CONFIG.sample_rate
HOP = DEFAULT_CONFIG.hop_samples


class TriggerSmoother:
    """`level` hits among the last `window` evaluations fire once; then silence for `refractory` samples.

    An evaluation may also be undecided: a vetoed window whose second look (edge.takematch) has not been taken,
    given as a function that takes it. It is called only when the decision needs it (this evaluation could
    fire counting every undecided one as a hit), newest first, at most once. The detections are those of taking
    every look at once; the looks are far fewer (most vetoed windows are lone peaks that could not fire).
    """

    def __init__(self, level: int, window: int, refractory_samples: int) -> None:
        if not 1 <= level <= window:
            raise ValueError(f"TriggerSmoother: need 1 <= level <= window, got {level}, {window}")
        self.level = level
        self.refractory_samples = refractory_samples
        self._hits: deque[bool | Callable[[], bool]] = deque(maxlen=window)
        self._silent_until = -1

    def update(self, hit: bool, sample_time: int, undecided: Callable[[], bool] | None = None) -> bool:
        """Record one evaluation at `sample_time` (end of its window): a hit, a miss or (not a hit, with
        `undecided`) a second look still to take. True when this one fires."""
        if sample_time < self._silent_until:
            return False
        slots = self._hits
        slots.append(True if hit else undecided or False)
        # Newest first: this evaluation decides whether any other one counts.
        for i in reversed(range(len(slots))):
            if slots[-1] is False or sum(h is not False for h in slots) < self.level:
                return False
            if sum(h is True for h in slots) >= self.level:
                break
            look = slots[i]
            if callable(look):
                slots[i] = bool(look())
        if sum(h is True for h in slots) < self.level:
            return False
        self._hits.clear()
        self._silent_until = sample_time + self.refractory_samples
        return True

    def reset(self) -> None:
        self._hits.clear()


@dataclass(frozen=True)
class KeywordScores:
    scores: FloatArray  # [K] cosine with each template
    negative_scores: FloatArray  # [K] best cosine with that keyword's negatives (-inf when none)
    hits: npt.NDArray[np.bool_]  # [K]
    # Keywords whose window reached the threshold, was vetoed and gets a second look not yet taken (scored
    # without the window's features): KeywordMatcher.follows_take decides them.
    undecided: tuple[int, ...] = ()


class KeywordMatcher:
    """Cosine scoring of one embedding against every keyword, with per-keyword thresholds and negatives.

    A phrase keyword (longer than one window) scores the lowest cosine of its parts with the windows that ended
    that long ago: the windows starting with the phrase, centred on it and ending with it, all in order.
    """

    def __init__(
        self,
        templates: Sequence[Template],
        default_threshold: float,
        hop_ms: int = 100,
        veto_margin: float = 0.0,
        take_match_spread: float = 0.0,
        take_match_floor: float = 0.0,
    ) -> None:
        self.templates = list(templates)
        self.veto_margin = veto_margin
        # The keywords whose vetoed windows get a second look against the takes (edge.takematch): words whose
        # takes agree within `take_match_spread`, with the distance a window must come within.
        self._take_match = {
            k: (t.take_speech, within)
            for k, t in enumerate(self.templates)
            if (within := look_distance(t.take_speech, t.take_spread, take_match_spread, take_match_floor))
            is not None
        }
        # (keyword index, part templates [P, D], how many windows back each part's window ended)
        self._phrases = [
            (k, t.parts, [round(offset / hop_ms) for offset in t.part_offsets_ms])
            for k, t in enumerate(self.templates)
            if t.is_phrase
        ]
        self.history = 1 + max((max(back) for _, _, back in self._phrases), default=0)
        self.names = [t.name for t in self.templates]
        dim = self.templates[0].embedding.shape[0] if self.templates else 0
        self._matrix = (
            np.stack([t.embedding for t in self.templates]) if self.templates else np.zeros((0, dim))
        )
        self.thresholds = np.array(
            [default_threshold if t.threshold is None else t.threshold for t in self.templates],
            dtype=np.float32,
        )
        # Every keyword's negatives in one matrix (one product per window, not one per keyword): a keyword may
        # hold a hundred look-alikes from the cohort (edge.resolver) besides those its user rejected.
        counts = [t.negatives.shape[0] for t in self.templates]
        self._negatives = (
            np.concatenate([t.negatives for t in self.templates]).astype(np.float32)
            if sum(counts)
            else np.zeros((0, dim), dtype=np.float32)
        )
        self._has_negatives = np.array([c > 0 for c in counts], dtype=bool)
        self._negative_starts = (
            np.cumsum([0, *counts[:-1]])[self._has_negatives] if counts else np.zeros(0, int)
        )

    def __len__(self) -> int:
        return len(self.templates)

    def score(
        self,
        embedding: FloatArray,
        recent: Sequence[FloatArray | None] = (),
        features: FloatArray | None = None,
    ) -> KeywordScores:
        """`recent`: the last windows' embeddings, oldest first, this one last (None where gated); `features`:
        the window's MFCC frames, for the second look at vetoed windows (none without them)."""
        scores = (self._matrix @ embedding).astype(np.float32)
        for k, parts, back in self._phrases:
            # Every part must match: the lowest of their cosines (a phrase that shares a word scores no higher
            # than its differing part).
            lowest = np.inf
            for part, windows in zip(parts, back, strict=True):
                past = embedding if windows == 0 else recent[-1 - windows] if windows < len(recent) else None
                lowest = min(lowest, float(part @ past) if past is not None else 0.0)
            scores[k] = lowest
        negative = np.full(len(self.templates), -np.inf, dtype=np.float32)
        if self._negatives.shape[0]:
            closeness = self._negatives @ embedding
            negative[self._has_negatives] = np.maximum.reduceat(closeness, self._negative_starts)
        reached = scores >= self.thresholds
        vetoed = reached & veto_mask(negative, scores, self.veto_margin)
        hits = reached & ~vetoed
        looks = tuple(int(i) for i in np.flatnonzero(vetoed) if int(i) in self._take_match)
        if features is not None and looks:
            window = match_features(features)
            for looked in looks:
                hits[looked] = self.follows_take(looked, window)
            looks = ()
        return KeywordScores(scores, negative, hits, looks)

    def follows_take(self, keyword: int, window: FloatArray) -> bool:
        """The second look: whether the window's features (edge.takematch.match_features) follow one of the
        keyword's takes within its accepted distance (the takes' spread, or the floor when they agree closer)."""
        speech, within = self._take_match[keyword]
        return bool(best_distance(speech, window)[0] <= within)


@dataclass(frozen=True)
class WindowResult:
    """One evaluated model window: [start_sample, end_sample) on the sample clock."""

    start_sample: int
    end_sample: int
    peak_dbfs: float
    gated: bool
    embedding: FloatArray | None
    scores: KeywordScores | None


@dataclass(frozen=True)
class Detection:
    keyword: str
    score: float
    threshold: float
    start_sample: int
    end_sample: int
    pin: int | None
    hook: str | None
    audio: FloatArray = field(repr=False)

    @property
    def time_s(self) -> float:
        """When the detection was made: the end of the window that completed it."""
        return self.end_sample / SAMPLE_RATE

    def to_event(self) -> dict[str, object]:
        return {
            "event": "detection",
            "keyword": self.keyword,
            "time_s": round(self.time_s, 3),
            "window_start_s": round(self.start_sample / SAMPLE_RATE, 3),
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "pin": self.pin,
        }


class Detector:
    """Push 16 kHz float32 chunks; get the detections they complete. Not thread-safe."""

    def __init__(
        self,
        encoder: Encoder,
        templates: Sequence[Template] = (),
        settings: DetectorConfig | None = None,
        on_window: Callable[[WindowResult], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.settings = settings or DetectorConfig()
        self.settings.validate("detector")
        self.on_window = on_window
        self.frames = encoder.frames
        self.window_samples = encoder.window_samples
        self.hop_frames = self.settings.hop_ms * SAMPLE_RATE // 1000 // HOP
        self.samples_seen = 0  # the sample clock
        self.windows_evaluated = 0
        self.windows_gated = 0
        self._gate_energy = 10.0 ** (self.settings.gate_dbfs / 10.0)
        self._set_templates(templates)
        self._reset_stream_state()

    def _reset_stream_state(self) -> None:
        self._mfcc = StreamingMfcc()
        self._stream_start = self.samples_seen  # sample clock at the first sample of this stream segment
        # The last window's worth of MFCC frames; `_frames_start` counts the frames dropped before it.
        self._frames_kept = np.zeros((0, DEFAULT_CONFIG.n_mfcc), dtype=np.float32)
        self._frames_start = 0
        self._history = np.zeros(0, dtype=np.float32)
        self._history_start = self.samples_seen
        # The last windows' embeddings (None where gated): phrase keywords score windows that ended earlier.
        self._recent: deque[FloatArray | None] = deque(maxlen=self.matcher.history)

    def _set_templates(self, templates: Sequence[Template]) -> None:
        old = getattr(self, "_smoothers", {})
        self.matcher = KeywordMatcher(
            templates,
            self.settings.threshold,
            self.settings.hop_ms,
            self.settings.veto_margin,
            self.settings.take_match_spread,
            self.settings.take_match_floor,
        )
        if hasattr(self, "_recent") and self._recent.maxlen != self.matcher.history:
            self._recent = deque(self._recent, maxlen=self.matcher.history)
        refractory = self.settings.refractory_ms * SAMPLE_RATE // 1000
        self._smoothers: dict[str, TriggerSmoother] = {
            name: old.get(name)
            or TriggerSmoother(self.settings.trigger_level, self.settings.trigger_window, refractory)
            for name in self.matcher.names
        }

    def set_templates(self, templates: Sequence[Template]) -> None:
        """Swap the keyword set (reload); the state of keywords that stay is kept."""
        self._set_templates(templates)

    def discontinuity(self) -> None:
        """The audio broke (device reopened): restart the window, keep the clock and refractory periods."""
        for smoother in self._smoothers.values():
            smoother.reset()
        self._reset_stream_state()

    def push(self, chunk: npt.ArrayLike) -> list[Detection]:
        samples = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return []
        self._history = np.concatenate((self._history, samples))
        self.samples_seen += samples.shape[0]
        frames = self._mfcc.push(samples)
        detections: list[Detection] = []
        if frames.shape[0]:
            self._frames_kept = np.concatenate((self._frames_kept, frames))
            emitted_before = self._mfcc.frames_emitted - frames.shape[0]
            # Window k ends at frame `self.frames + k * hop_frames`: visit only the ends inside this chunk.
            first_k = max(0, -(-(emitted_before + 1 - self.frames) // self.hop_frames))
            end = self.frames + first_k * self.hop_frames
            while end <= self._mfcc.frames_emitted:
                window = self._frames_kept[end - self.frames - self._frames_start : end - self._frames_start]
                start = self._stream_start + (end - self.frames) * HOP
                detections.extend(self._evaluate(start, window))
                end += self.hop_frames
            surplus = self._frames_kept.shape[0] - self.frames
            if surplus > 0:
                self._frames_kept = self._frames_kept[surplus:]
                self._frames_start += surplus
        keep_from = self.samples_seen - self.window_samples - HOP * self.hop_frames
        if keep_from > self._history_start:
            self._history = self._history[keep_from - self._history_start :]
            self._history_start = keep_from
        return detections

    def _window_audio(self, start: int) -> FloatArray:
        offset = start - self._history_start
        return self._history[offset : offset + self.window_samples]

    def _evaluate(self, start: int, features: FloatArray) -> list[Detection]:
        end = start + self.window_samples
        audio = self._window_audio(start)
        blocks = audio[: audio.shape[0] // HOP * HOP].reshape(-1, HOP).astype(np.float64)
        peak_energy = float(np.max(np.mean(blocks * blocks, axis=1))) if blocks.size else 0.0
        peak_dbfs = 10.0 * np.log10(max(peak_energy, 1e-12))
        self.windows_evaluated += 1
        gated = self.settings.gate and peak_energy < self._gate_energy
        embedding: FloatArray | None = None
        scores: KeywordScores | None = None
        if gated:
            self.windows_gated += 1
            for smoother in self._smoothers.values():
                smoother.update(False, end)
        elif len(self.matcher) or self.on_window is not None:
            embedding = self.encoder.embed_features(features)[0]
        self._recent.append(embedding)
        detections: list[Detection] = []
        if embedding is not None and len(self.matcher):
            scores = self.matcher.score(embedding, self._recent)
            looks: dict[int, Callable[[], bool]] = {}
            if scores.undecided:  # the window's features are kept for the looks the trigger may need
                window = match_features(features)
                looks = {k: self._second_look(k, window) for k in scores.undecided}
            for k, name in enumerate(self.matcher.names):
                if self._smoothers[name].update(bool(scores.hits[k]), end, looks.get(k)):
                    template = self.matcher.templates[k]
                    detections.append(
                        Detection(
                            name,
                            float(scores.scores[k]),
                            float(self.matcher.thresholds[k]),
                            start,
                            end,
                            template.pin,
                            template.hook,
                            audio.copy(),
                        )
                    )
        if self.on_window is not None:
            self.on_window(WindowResult(start, end, peak_dbfs, gated, embedding, scores))
        if len(detections) > 1:
            # One sound, one keyword: the best-scoring one wins.
            detections = [max(detections, key=lambda d: d.score - d.threshold)]
        return detections

    def _second_look(self, keyword: int, window: FloatArray) -> Callable[[], bool]:
        """The second look at this window for `keyword`, taken when the trigger needs it (TriggerSmoother): the
        window's features are kept, the alignment waits. Bound to this keyword set (a reload may renumber)."""
        matcher = self.matcher
        return lambda: matcher.follows_take(keyword, window)
