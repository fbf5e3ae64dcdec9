"""Takes for enrollment: cut one utterance from a 16 kHz stream, check it, and window it for the encoder.

`VoiceActivityCutter` finds one utterance (frame energy against an adaptive noise floor, with an onset count
and a hangover) and returns it with a little padding. `check_signal` and `check_consistency` refuse a take
with one distinct reason each. `take_window` centres the word in the model's window with the recording's own
sound around it. Numpy only; `edge.enrollment` drives these from the button.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge.audio import resample
from edge.takematch import TakeReference, take_spread
from edge.templates import Template

__all__ = [
    "PHRASE_FROM_SAMPLES",
    "PHRASE_MAX_SAMPLES",
    "SAMPLE_RATE",
    "Rejection",
    "Segment",
    "TakeChecks",
    "TakeWindows",
    "VadConfig",
    "VoiceActivityCutter",
    "check_consistency",
    "check_signal",
    "make_template",
    "speed_perturbed",
    "take_window",
    "take_windows",
]

FloatArray = npt.NDArray[np.float32]
SAMPLE_RATE = 16000


class Rejection(StrEnum):
    TOO_QUIET = "too quiet"
    CLIPPED = "clipped"
    TOO_SHORT = "too short"
    TOO_LONG = "longer than a keyword can be"
    INCONSISTENT = "inconsistent with the other takes"


@dataclass(frozen=True)
class VadConfig:
    frame_samples: int = 320  # 20 ms
    floor_dbfs: float = -60.0  # nothing quieter than this is speech, whatever the noise floor
    margin_db: float = 12.0  # speech is this far above the running noise floor
    onset_frames: int = 3  # 60 ms above threshold starts an utterance
    hangover_frames: int = 15  # 300 ms below threshold ends it
    pre_pad_samples: int = 2400  # 150 ms kept before the onset
    post_pad_samples: int = 1600  # 100 ms kept after the last speech frame
    noise_rise: float = 0.05  # the floor rises slowly (and drops at once)
    # Frames quieter than this are digital silence (a microphone's first moments, a muted input): they say
    # nothing about the room, and a floor learnt from them would take the room's own sound for speech.
    silence_dbfs: float = -90.0
    # When an utterance ends, its edges are trimmed against this percentile of the recording's frame levels
    # (the floor seen over the whole take, which a slowly rising noise cannot drag along) plus `trim_margin_db`:
    # lower than `margin_db`, as the word's quiet edges (a final "s") sit close to a steady room's floor.
    floor_percentile: float = 20.0
    trim_margin_db: float = 6.0


@dataclass(frozen=True)
class TakeChecks:
    quiet_dbfs: float = -45.0  # the loudest 20 ms frame of a take must reach this
    clip_level: float = 0.99
    max_clipped_fraction: float = 0.001
    min_speech_seconds: float = 0.15
    # Cosine of a take to the mean of the others. Measured on the shipped model with held-out speakers of the
    # training corpora (400 random triples): 0.4 refuses 2.8 % of same-word takes and admits 3.0 % of
    # other-word takes, about the equal-error point (0.5 refuses 8.0 %).
    consistency_threshold: float = 0.4


@dataclass(frozen=True)
class Segment:
    """Sample offsets into the cutter's recording: [start, end) is the padded cut, speech_* the voiced part."""

    start: int
    end: int
    speech_start: int
    speech_end: int
    too_long: bool = False

    @property
    def speech_samples(self) -> int:
        return self.speech_end - self.speech_start


def _frame_dbfs(frames: FloatArray) -> npt.NDArray[np.float64]:
    power = np.mean(np.square(frames, dtype=np.float64), axis=-1)
    levels: npt.NDArray[np.float64] = 10.0 * np.log10(np.maximum(power, 1e-12))
    return levels


class VoiceActivityCutter:
    """Feed audio with `push`; it returns the first complete utterance as a `Segment` (then stays done)."""

    def __init__(
        self, max_speech_samples: int, max_recording_samples: int, config: VadConfig = VadConfig()
    ) -> None:
        self.config = config
        self.max_speech_samples = max_speech_samples
        self.max_recording_samples = max_recording_samples
        self._chunks: list[FloatArray] = []
        self._samples = 0
        self._analysed = 0  # samples already framed
        self._noise_db: float | None = None
        self._run = 0  # consecutive frames above (before onset) or below (after) threshold
        self._speech_start: int | None = None
        self._last_speech_end = 0
        self._levels: list[float] = []  # every frame's level so far (dBFS)
        self.segment: Segment | None = None

    @property
    def recording(self) -> FloatArray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)

    @property
    def in_speech(self) -> bool:
        return self._speech_start is not None

    @property
    def limit(self) -> int:
        return self.max_recording_samples

    @property
    def samples(self) -> int:
        return self._samples

    def push(self, chunk: npt.ArrayLike) -> Segment | None:
        """Record `chunk`; the utterance once it has ended. Recording goes on after it (up to the maximum)."""
        samples = np.asarray(chunk, dtype=np.float32).reshape(-1)
        room = self.max_recording_samples - self._samples
        if self.segment is not None and room <= 0:
            return self.segment
        samples = samples[:room] if self.segment is not None else samples
        self._chunks.append(samples)
        self._samples += samples.shape[0]
        if self.segment is not None:
            return self.segment
        audio = self.recording
        self._chunks = [audio]
        size = self.config.frame_samples
        while self.segment is None and self._analysed + size <= self._samples:
            frame = audio[self._analysed : self._analysed + size]
            self._analysed += size
            self._step(float(_frame_dbfs(frame)), self._analysed)
        if (
            self.segment is None
            and self._samples >= self.max_recording_samples
            and self._speech_start is not None
        ):
            self._finish(too_long=True)  # never-ending "speech" (a fan, music): give up on this take
        return self.segment

    def _step(self, level_db: float, frame_end: int) -> None:
        cfg = self.config
        self._levels.append(level_db)
        if self._noise_db is None:
            if level_db < cfg.silence_dbfs:
                return
            self._noise_db = level_db
        # Hysteresis: an utterance starts `margin_db` above the floor and goes on while `trim_margin_db` above
        # it, so the quiet end of a word in a noisy room (20 dB under its peak) is not cut off.
        margin = cfg.margin_db if self._speech_start is None else cfg.trim_margin_db
        loud = level_db >= max(cfg.floor_dbfs, self._noise_db + margin)
        if self._speech_start is None:
            if not loud:
                self._noise_db = min(level_db, self._noise_db + cfg.noise_rise * (level_db - self._noise_db))
            self._run = self._run + 1 if loud else 0
            if self._run >= cfg.onset_frames:
                self._speech_start = frame_end - cfg.onset_frames * cfg.frame_samples
                self._last_speech_end, self._run = frame_end, 0
            return
        if loud:
            self._last_speech_end, self._run = frame_end, 0
        else:
            self._run += 1
            if self._run >= cfg.hangover_frames:
                self._finish(too_long=False)

    def _finish(self, too_long: bool) -> None:
        assert self._speech_start is not None
        speech_start, speech_end = self._tightened(self._speech_start, self._last_speech_end)
        too_long = speech_end - speech_start > self.max_speech_samples
        self.segment = Segment(
            start=max(0, speech_start - self.config.pre_pad_samples),
            end=min(self._samples, speech_end + self.config.post_pad_samples),
            speech_start=speech_start,
            speech_end=speech_end,
            too_long=too_long,
        )

    def _tightened(self, start: int, end: int) -> tuple[int, int]:
        """[start, end) without the frames at its edges that the whole recording's floor calls room tone.

        The running floor only learns from the quiet before an onset; a room that got louder (or a floor learnt
        from a quiet first moment) makes room tone look like speech until the hangover. The recording's own
        percentile floor does not drift that way: the first and last runs of `onset_frames` frames above it
        bound the utterance. Never widens the cut, and keeps it when nothing stands out.
        """
        cfg = self.config
        size = cfg.frame_samples
        levels = np.asarray(self._levels)
        audible = levels[levels >= cfg.silence_dbfs]
        if audible.size == 0:
            return start, end
        threshold = max(
            cfg.floor_dbfs, float(np.percentile(audible, cfg.floor_percentile)) + cfg.trim_margin_db
        )
        first, last = start // size, -(-end // size)
        loud = levels[first:last] >= threshold
        runs = np.convolve(loud.astype(np.int64), np.ones(cfg.onset_frames, dtype=np.int64), mode="valid")
        full = np.flatnonzero(runs >= cfg.onset_frames)
        if full.size == 0:
            return start, end
        return (first + full[0]) * size, min(end, (first + full[-1] + cfg.onset_frames) * size)


def check_signal(
    audio: FloatArray, segment: Segment, checks: TakeChecks, frame_samples: int = 320
) -> str | None:
    """A `Rejection` value with details for a bad take's signal, or None when it is fine. Order: worst first."""
    if segment.too_long:
        return (
            f"{Rejection.TOO_LONG}: {segment.speech_samples / SAMPLE_RATE:.2f} s of speech, at most "
            f"{PHRASE_MAX_SAMPLES / SAMPLE_RATE:g} s"
        )
    speech = audio[segment.speech_start : segment.speech_end]
    seconds = speech.shape[0] / SAMPLE_RATE
    if seconds < checks.min_speech_seconds:
        return f"{Rejection.TOO_SHORT}: {seconds:.2f} s of speech, at least {checks.min_speech_seconds} s expected"
    usable = speech[: speech.shape[0] // frame_samples * frame_samples].reshape(-1, frame_samples)
    loudest = float(np.max(_frame_dbfs(usable)))
    if loudest < checks.quiet_dbfs:
        return f"{Rejection.TOO_QUIET}: peak {loudest:.1f} dBFS, at least {checks.quiet_dbfs} dBFS expected"
    cut = audio[segment.start : segment.end]
    clipped = float(np.mean(np.abs(cut) >= checks.clip_level))
    if clipped > checks.max_clipped_fraction:
        return f"{Rejection.CLIPPED}: {100 * clipped:.2f} % of samples at full scale"
    return None


def take_window(audio: FloatArray, segment: Segment, window_samples: int) -> FloatArray:
    """The model window centred on the speech, with the recording's own sound around it (zeros only past its ends).

    The detector sees speech inside ambient sound, so the template is made the same way rather than from
    zero-padded cuts.
    """
    centre = (segment.speech_start + segment.speech_end) // 2
    start = centre - window_samples // 2
    window = np.zeros(window_samples, dtype=np.float32)
    lo, hi = max(0, start), min(audio.shape[0], start + window_samples)
    window[lo - start : hi - start] = audio[lo:hi]
    return window


@dataclass(frozen=True)
class TakeWindows:
    """A take as the encoder sees it: the window centred on the speech, and the phrase's three windows.

    `parts` are the windows starting with the speech, centred on it and ending with it (each with `EDGE_PAD`
    of the room around the speech); `part_offsets` says how many samples before the last one's end each one
    ends (a multiple of the detector's hop, so that a stream holds windows ending exactly there). For a word the
    three coincide; for a phrase longer than a window they cover it whole, and the detector scores the phrase
    as the sequence of those windows.
    """

    centred: FloatArray  # [L]
    parts: FloatArray  # [3, L]
    part_offsets: tuple[int, int, int]
    speech_samples: int

    @property
    def is_phrase(self) -> bool:
        return self.speech_samples > PHRASE_FROM_SAMPLES


def _window_from(audio: FloatArray, start: int, window_samples: int) -> FloatArray:
    window = np.zeros(window_samples, dtype=np.float32)
    lo, hi = max(0, start), min(audio.shape[0], start + window_samples)
    if hi > lo:
        window[lo - start : hi - start] = audio[lo:hi]
    return window


def take_windows(audio: FloatArray, segment: Segment, window_samples: int, hop_samples: int) -> TakeWindows:
    """The centred window and the three phrase windows of a take (see `TakeWindows`)."""
    last_end = segment.speech_end + EDGE_PAD
    # The first window starts EDGE_PAD before the speech: it ends this long before the last one.
    span = max(0, segment.speech_samples + 2 * EDGE_PAD - window_samples)
    first = round(span / hop_samples) * hop_samples
    middle = round(first / 2 / hop_samples) * hop_samples
    offsets = (first, middle, 0)
    parts = np.stack(
        [_window_from(audio, last_end - off - window_samples, window_samples) for off in offsets]
    )
    return TakeWindows(take_window(audio, segment, window_samples), parts, offsets, segment.speech_samples)


def check_consistency(embeddings: FloatArray, threshold: float) -> tuple[int, float] | None:
    """(index, cosine) of the take least like the mean of the others when that cosine is below `threshold`.

    With two takes the pair is symmetric, so the newest (last) one is blamed.
    """
    if embeddings.shape[0] < 2:
        return None
    units = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    scores = []
    for i in range(units.shape[0]):
        others = np.delete(units, i, axis=0).mean(axis=0)
        scores.append(float(units[i] @ others / max(float(np.linalg.norm(others)), 1e-12)))
    worst = units.shape[0] - 1 if units.shape[0] == 2 else int(np.argmin(scores))
    return (worst, scores[worst]) if scores[worst] < threshold else None


# The longest take (speech, without the padding); beyond the model's window a take is enrolled as a phrase.
PHRASE_MAX_SAMPLES = int(2.5 * SAMPLE_RATE)
# Takes with more speech than this are phrases: one centred window would cut their ends off.
PHRASE_FROM_SAMPLES = int(1.1 * SAMPLE_RATE)
# Room sound kept on each side of the speech in a phrase's first and last windows.
EDGE_PAD = 2400

# Kaldi's speed perturbation factors: each take also enrolls played 10 % slower and 10 % faster (tempo and
# pitch together), a cheap stand-in for the other voices and paces the keyword will be spoken with.
SPEED_FACTORS = (0.9, 1.1)


def speed_perturbed(window: FloatArray, factors: tuple[float, ...] = SPEED_FACTORS) -> FloatArray:
    """The model window played at each speed factor, centred again in a window of the same length [F, L]."""
    length = window.shape[0]
    out = np.zeros((len(factors), length), dtype=np.float32)
    for row, factor in enumerate(factors):
        # Resampling to rate/factor and playing back at the rate makes it `factor` times faster.
        played = resample(window, SAMPLE_RATE, round(SAMPLE_RATE / factor))
        if played.shape[0] >= length:
            start = (played.shape[0] - length) // 2
            out[row] = played[start : start + length]
        else:
            start = (length - played.shape[0]) // 2
            out[row, start : start + played.shape[0]] = played
    return out


class WindowEmbedder(Protocol):
    sha256: str

    @property
    def frontend_fingerprint(self) -> str: ...

    def embed_windows(self, audio: npt.ArrayLike) -> FloatArray: ...


def make_template(
    name: str, cuts: Sequence[TakeWindows], embeddings: FloatArray, embedder: WindowEmbedder, **extra: Any
) -> Template:
    """The keyword from its accepted takes (their centred windows' `embeddings` given): the takes and their
    speed-perturbed copies make the template; when any take is a phrase, every take's three phrase windows make
    the parts, at the takes' median offsets (in ms, rounded to the detector's default 100 ms hop). A word also
    keeps each take's features for the second look at vetoed windows (edge.takematch)."""
    variants = embedder.embed_windows(np.concatenate([speed_perturbed(c.centred) for c in cuts]))
    if not any(c.is_phrase for c in cuts):
        references = [TakeReference(c.centred, c.speech_samples) for c in cuts]
        extra["take_speech"] = tuple(r.speech for r in references)
        extra["take_spread"] = take_spread(references)
    else:
        windows = np.concatenate([c.parts for c in cuts])
        parts = embedder.embed_windows(windows).reshape(len(cuts), 3, -1)
        offsets = np.median(np.array([c.part_offsets for c in cuts]), axis=0)
        extra["parts"] = parts
        extra["part_offsets_ms"] = tuple(round(float(o) / SAMPLE_RATE * 10) * 100 for o in offsets)
    return Template.from_takes(
        name, embeddings, embedder.sha256, embedder.frontend_fingerprint, variants=variants, **extra
    )
