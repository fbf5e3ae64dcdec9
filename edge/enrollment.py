"""Push-button enrollment: the button's state machine over takes cut from the microphone stream.

`EnrollmentSession` is driven by audio chunks and gestures only, and its clock is the count of samples it was
fed, so it runs the same in a test as on the board (no threads, no wall clock). It is not thread-safe: the
daemon hands it gestures from its audio loop. Cutting and checking takes live in `edge.takes`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.gpio import Gesture, Indicator
from edge.takes import (
    EDGE_PAD,
    PHRASE_MAX_SAMPLES,
    SAMPLE_RATE,
    Rejection,
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

__all__ = ["EnrollmentConfig", "EnrollmentSession", "SessionState"]

log = logging.getLogger(__name__)

HOP_SAMPLES = 1600  # phrase windows sit on the detector's default 100 ms hop grid

FloatArray = npt.NDArray[np.float32]
_BUTTON_NAME = re.compile(r"^keyword-(\d+)$")


@dataclass(frozen=True)
class EnrollmentConfig:
    takes: int = 3
    listen_seconds: float = 5.0  # no speech by then: the take is refused as too quiet
    feedback_seconds: float = 0.8  # audio ignored while the LED shows a take's verdict
    confirm_seconds: float = 5.0  # window for the double press that confirms a removal
    max_rejections: int = 6  # then the enrollment is abandoned
    pin_pool: tuple[int, ...] = ()
    checks: TakeChecks = field(default_factory=TakeChecks)
    vad: VadConfig = field(default_factory=VadConfig)

    def __post_init__(self) -> None:
        if self.takes < 1 or self.max_rejections < 1:
            raise ValueError(f"EnrollmentConfig: takes and max_rejections must be >= 1, got {self}")
        if min(self.listen_seconds, self.feedback_seconds, self.confirm_seconds) <= 0:
            raise ValueError(
                "EnrollmentConfig: listen_seconds, feedback_seconds, confirm_seconds must be > 0"
            )


class Embedder(Protocol):
    """What enrollment needs from `edge.model.Encoder`."""

    @property
    def window_samples(self) -> int: ...

    @property
    def frontend_fingerprint(self) -> str: ...

    sha256: str

    def embed_windows(self, audio: npt.ArrayLike) -> FloatArray: ...


class SessionState(Enum):
    IDLE = "idle"
    LISTENING = "listening"
    FEEDBACK = "feedback"
    CONFIRM_REMOVAL = "confirm removal"


class EnrollmentSession:
    """Short press: enroll `keyword-N` from `config.takes` takes. Long press then double press: remove the newest."""

    def __init__(
        self,
        embedder: Embedder,
        store: TemplateStore,
        indicator: Indicator,
        config: EnrollmentConfig = EnrollmentConfig(),
        on_keyword_added: Callable[[Template], None] | None = None,
        on_keyword_removed: Callable[[str], None] | None = None,
        assess: Callable[[Template], str | None] | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.indicator = indicator
        self.config = config
        self.on_keyword_added = on_keyword_added
        self.on_keyword_removed = on_keyword_removed
        # The false-alarm budget's verdict on a new keyword: a warning to show, or None (see edge.resolver).
        self.assess = assess
        self.state = SessionState.IDLE
        self.clock = 0  # samples fed so far: the session's only notion of time
        self.rejections: list[str] = []  # every refused take of the current enrollment, with its reason
        self._deadline = 0
        self._name = ""
        self._pin: int | None = None
        self._removal: str | None = None
        self._embeddings: list[FloatArray] = []
        self._cuts: list[TakeWindows] = []  # the windows of each kept take, in step with _embeddings
        self._cutter: VoiceActivityCutter | None = None

    @property
    def busy(self) -> bool:
        """True while enrolling or asking for a confirmation: the daemon should not detect meanwhile."""
        return self.state is not SessionState.IDLE

    def _seconds(self, seconds: float) -> int:
        return round(seconds * SAMPLE_RATE)

    def gesture(self, gesture: Gesture) -> None:
        if self.state is SessionState.IDLE:
            if gesture is Gesture.SHORT:
                self._start_enrollment()
            elif gesture is Gesture.LONG:
                self._ask_removal()
        elif self.state is SessionState.CONFIRM_REMOVAL:
            if gesture is Gesture.DOUBLE:
                self._remove()
            elif gesture is Gesture.LONG:
                self._cancel("removal cancelled by a long press")
        elif gesture is Gesture.LONG:
            self._cancel("enrollment cancelled by a long press")

    def feed(self, chunk: npt.ArrayLike) -> None:
        samples = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self.clock += samples.shape[0]
        if self.state is SessionState.LISTENING:
            assert self._cutter is not None
            segment = self._cutter.push(samples)
            # Judge once the recording holds the whole model window around the word (or can grow no more).
            # (for a phrase, also its last window: EDGE_PAD past the speech)
            needed = 0
            if segment is not None:
                centre = (segment.speech_start + segment.speech_end) // 2
                wanted = max(centre + self.embedder.window_samples // 2, segment.speech_end + EDGE_PAD)
                needed = min(wanted, self._cutter.limit)
            if segment is not None and self._cutter.samples >= needed:
                self._judge(self._cutter.recording, segment)
            elif not self._cutter.in_speech and self.clock >= self._deadline:
                limit = self.config.listen_seconds
                self._reject(f"{Rejection.TOO_QUIET}: no speech heard in {limit:g} s")
        elif self.state is SessionState.FEEDBACK and self.clock >= self._deadline:
            self._listen()
        elif self.state is SessionState.CONFIRM_REMOVAL and self.clock >= self._deadline:
            self._cancel(f"no double press within {self.config.confirm_seconds:g} s")

    def _free_name_and_pin(self) -> tuple[str, int | None]:
        templates = self.store.list()
        used = {int(m.group(1)) for t in templates if (m := _BUTTON_NAME.match(t.name))}
        number = next(n for n in range(1, len(used) + 2) if n not in used)
        taken = {t.pin for t in templates}
        free = [pin for pin in self.config.pin_pool if pin not in taken]
        if self.config.pin_pool and not free:
            raise RuntimeError(
                f"every LED pin of the pool {list(self.config.pin_pool)} is in use; remove a keyword"
            )
        return f"keyword-{number}", (free[0] if free else None)

    def _start_enrollment(self) -> None:
        try:
            self._name, self._pin = self._free_name_and_pin()
        except RuntimeError as error:
            log.error("enrollment refused: %s", error)
            self.indicator.error(str(error))
            return
        self._embeddings, self._cuts, self.rejections = [], [], []
        log.info("enrolling %r (LED pin %s): say the word %d times", self._name, self._pin, self.config.takes)
        self._listen()

    def _listen(self) -> None:
        window = self.embedder.window_samples
        listen = self._seconds(self.config.listen_seconds)
        self._cutter = VoiceActivityCutter(PHRASE_MAX_SAMPLES, listen + 2 * window, self.config.vad)
        self.state = SessionState.LISTENING
        self._deadline = self.clock + listen
        self.indicator.speak_now(len(self._embeddings) + 1, self.config.takes)

    def _judge(self, audio: FloatArray, segment: Segment) -> None:
        problem = check_signal(audio, segment, self.config.checks, self.config.vad.frame_samples)
        if problem is not None:
            self._reject(problem)
            return
        cut = take_windows(audio, segment, self.embedder.window_samples, HOP_SAMPLES)
        candidates = np.stack([*self._embeddings, self.embedder.embed_windows(cut.centred[None])[0]])
        outlier = check_consistency(candidates, self.config.checks.consistency_threshold)
        if outlier is not None:
            index, score = outlier
            which = "this take" if index == candidates.shape[0] - 1 else f"take {index + 1}"
            kept = np.delete(candidates, index, axis=0)
            self._embeddings = list(kept)
            self._cuts = [c for i, c in enumerate([*self._cuts, cut]) if i != index]
            self._reject(f"{Rejection.INCONSISTENT}: {which}, cosine {score:.2f} to the mean of the others")
            return
        self._embeddings = list(candidates)
        self._cuts.append(cut)
        if len(self._embeddings) >= self.config.takes:
            self._save()
        else:
            self.indicator.take_accepted(len(self._embeddings), self.config.takes)
            self._pause()

    def _reject(self, reason: str) -> None:
        self.rejections.append(reason)
        log.info("take refused (%s)", reason)
        if len(self.rejections) >= self.config.max_rejections:
            self.state = SessionState.IDLE
            self.indicator.error(
                f"enrollment of {self._name} abandoned after {len(self.rejections)} refused takes"
            )
            return
        self.indicator.take_rejected(reason)
        self._pause()

    def _pause(self) -> None:
        self.state = SessionState.FEEDBACK
        self._deadline = self.clock + self._seconds(self.config.feedback_seconds)

    def _save(self) -> None:
        self.state = SessionState.IDLE
        template = make_template(
            self._name, self._cuts, np.stack(self._embeddings), self.embedder, pin=self._pin
        )
        try:
            self.store.add(template)
        except OSError as error:
            log.error("could not save keyword %r: %s", self._name, error)
            self.indicator.error(f"saving {self._name} failed: {error}")
            return
        warning = None
        if self.assess is not None:
            try:
                warning = self.assess(template)
            except Exception as error:  # the keyword is saved; an estimate that fails must not undo that
                log.error("could not estimate the false alarms of %r: %s", self._name, error)
        self.indicator.keyword_saved(self._name, warning)
        if self.on_keyword_added is not None:
            self.on_keyword_added(template)

    def _ask_removal(self) -> None:
        templates = self.store.list()
        if not templates:
            self.indicator.error("no keyword to remove")
            return

        def newest(t: Template) -> tuple[str, int]:
            match = _BUTTON_NAME.match(t.name)
            return t.created, int(match.group(1)) if match else 0

        self._removal = max(templates, key=newest).name
        self.state = SessionState.CONFIRM_REMOVAL
        self._deadline = self.clock + self._seconds(self.config.confirm_seconds)
        self.indicator.removal_prompt(self._removal)

    def _remove(self) -> None:
        assert self._removal is not None
        name, self._removal = self._removal, None
        self.state = SessionState.IDLE
        self.store.remove(name)
        self.indicator.removed(name)
        if self.on_keyword_removed is not None:
            self.on_keyword_removed(name)

    def _cancel(self, why: str) -> None:
        log.info("%s", why)
        self.state = SessionState.IDLE
        self._removal = None
        self.indicator.cancelled(why)
