"""The board's LED patterns and push-button gestures, on gpiozero.

`Indicator` shows one named pattern at a time on an `LED` or `PWMLED` with gpiozero's background blink, so no
call blocks, and records every event it showed (the demo prints them; tests assert them). `ButtonGestures`
turns a gpiozero `Button`'s presses and releases into short, long and double presses. The classification is
`GestureClassifier`, a pure function of timestamps, so the timing rules are tested without threads or sleeps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "PATTERNS",
    "ButtonGestures",
    "Gesture",
    "GestureClassifier",
    "Indicator",
    "IndicatorEvent",
    "LedLike",
    "Pattern",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class LedLike(Protocol):
    """What `Indicator` needs from gpiozero's `LED` / `PWMLED`."""

    def on(self) -> None: ...

    def off(self) -> None: ...

    def blink(
        self, on_time: float = ..., off_time: float = ..., n: int | None = ..., background: bool = ...
    ) -> Any: ...


@dataclass(frozen=True)
class Pattern:
    """`count` blinks of `on_s` on / `off_s` off (`count=None`: until the next pattern); `steady`: just on."""

    on_s: float
    off_s: float
    count: int | None
    steady: bool = False
    meaning: str = ""


# Timings are far apart on purpose: a user must tell them apart without a legend (see docs/board.md).
PATTERNS: dict[str, Pattern] = {
    "detection": Pattern(0.4, 0.0, 1, meaning="one 0.4 s flash: the keyword was heard"),
    "speak_now": Pattern(0.0, 0.0, None, steady=True, meaning="steady on: say the word now"),
    "take_accepted": Pattern(0.15, 0.15, 2, meaning="two short blinks: take kept"),
    "take_rejected": Pattern(0.05, 0.05, 8, meaning="eight very fast blinks: take refused, say it again"),
    "keyword_saved": Pattern(1.0, 0.3, 2, meaning="two long blinks: keyword saved and active"),
    "keyword_saved_warning": Pattern(
        1.0,
        0.3,
        4,
        meaning="four long blinks: keyword saved, but expect false alarms (a longer phrase is better)",
    ),
    "removal_prompt": Pattern(0.5, 0.5, None, meaning="slow blinking: double-press to confirm removal"),
    "removed": Pattern(2.0, 0.0, 1, meaning="one 2 s glow: keyword removed"),
    "cancelled": Pattern(0.0, 0.0, 0, meaning="off: nothing was changed"),
    "error": Pattern(
        0.1, 0.1, None, meaning="fast blinking until the next action: something failed (see the log)"
    ),
}


@dataclass(frozen=True)
class IndicatorEvent:
    pattern: str
    detail: str
    at: float


class Indicator:
    """Non-blocking LED patterns over one gpiozero LED/PWMLED, recording each pattern shown."""

    def __init__(self, led: LedLike, name: str = "status", clock: Clock = time.monotonic) -> None:
        self.led = led
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._events: list[IndicatorEvent] = []

    @classmethod
    def on_pin(
        cls, pin: int | str, pwm: bool = False, active_high: bool = True, name: str = "status"
    ) -> Indicator:
        """An indicator on a GPIO pin (BCM numbering), with the current gpiozero pin factory."""
        from gpiozero import LED, PWMLED

        led = PWMLED(pin, active_high=active_high) if pwm else LED(pin, active_high=active_high)
        return cls(led, name=name)

    @property
    def events(self) -> tuple[IndicatorEvent, ...]:
        with self._lock:
            return tuple(self._events)

    def pattern_names(self) -> list[str]:
        return [event.pattern for event in self.events]

    def show(self, pattern: str, detail: str = "") -> None:
        """Start `pattern` in the background, replacing whatever is showing."""
        if pattern not in PATTERNS:
            raise ValueError(
                f"Indicator.show: unknown pattern {pattern!r}; expected one of {sorted(PATTERNS)}"
            )
        spec = PATTERNS[pattern]
        with self._lock:
            self._events.append(IndicatorEvent(pattern, detail, self._clock()))
        log.debug("%s LED: %s %s", self.name, pattern, detail)
        if spec.steady:
            self.led.on()
        elif spec.count == 0:
            self.led.off()
        else:
            self.led.blink(on_time=spec.on_s, off_time=spec.off_s, n=spec.count, background=True)

    def detection(self, keyword: str, score: float | None = None) -> None:
        self.show("detection", keyword if score is None else f"{keyword} {score:.3f}")

    def speak_now(self, take: int, takes: int) -> None:
        self.show("speak_now", f"take {take}/{takes}")

    def take_accepted(self, take: int, takes: int) -> None:
        self.show("take_accepted", f"take {take}/{takes}")

    def take_rejected(self, reason: str) -> None:
        self.show("take_rejected", reason)

    def keyword_saved(self, keyword: str, warning: str | None = None) -> None:
        """Saved; with `warning` (the budget expects more false alarms than allowed), a distinct pattern."""
        if warning is None:
            self.show("keyword_saved", keyword)
        else:
            self.show("keyword_saved_warning", f"{keyword}: {warning}")

    def removal_prompt(self, keyword: str) -> None:
        self.show("removal_prompt", keyword)

    def removed(self, keyword: str) -> None:
        self.show("removed", keyword)

    def cancelled(self, why: str = "") -> None:
        self.show("cancelled", why)

    def error(self, message: str) -> None:
        self.show("error", message)

    def off(self) -> None:
        self.led.off()

    def close(self) -> None:
        close = getattr(self.led, "close", None)
        if callable(close):
            close()


class Gesture(StrEnum):
    SHORT = "short"
    LONG = "long"
    DOUBLE = "double"


class GestureClassifier:
    """Press/release timestamps -> gestures. Call `poll(now)` at `next_deadline()` to flush timed decisions.

    A long press fires once the button has been held `hold_seconds` (while still held). A double press is a
    second short press starting within `double_press_seconds` of the first one's release. A single short press
    is therefore reported only when that window has passed with no second press.
    """

    def __init__(self, hold_seconds: float = 2.0, double_press_seconds: float = 0.5) -> None:
        if hold_seconds <= 0 or double_press_seconds <= 0:
            raise ValueError(
                f"GestureClassifier: hold_seconds and double_press_seconds must be > 0, got {hold_seconds}, "
                f"{double_press_seconds}"
            )
        self.hold_seconds = hold_seconds
        self.double_press_seconds = double_press_seconds
        self._pressed_at: float | None = None
        self._long_fired = False
        self._first_release_at: float | None = None
        self._second_press = False

    def press(self, now: float) -> list[Gesture]:
        out = self.poll(now)
        if self._pressed_at is not None:
            return out  # a repeated edge without a release: ignore
        self._pressed_at = now
        self._long_fired = False
        if self._first_release_at is not None:
            self._second_press = True
        return out

    def release(self, now: float) -> list[Gesture]:
        out = self.poll(now)
        if self._pressed_at is None:
            return out
        self._pressed_at = None
        if self._long_fired:
            self._long_fired = False
        elif self._second_press:
            out.append(Gesture.DOUBLE)
            self._first_release_at, self._second_press = None, False
        else:
            self._first_release_at = now
        return out

    def poll(self, now: float) -> list[Gesture]:
        out: list[Gesture] = []
        if (
            self._pressed_at is not None
            and not self._long_fired
            and now - self._pressed_at >= self.hold_seconds
        ):
            if self._second_press:
                out.append(Gesture.SHORT)  # the first press of the pair stands alone
                self._first_release_at, self._second_press = None, False
            out.append(Gesture.LONG)
            self._long_fired = True
        if (
            self._first_release_at is not None
            and self._pressed_at is None
            and now - self._first_release_at > self.double_press_seconds
        ):
            out.append(Gesture.SHORT)
            self._first_release_at = None
        return out

    def next_deadline(self) -> float | None:
        if self._pressed_at is not None and not self._long_fired:
            return self._pressed_at + self.hold_seconds
        if self._first_release_at is not None and self._pressed_at is None:
            return self._first_release_at + self.double_press_seconds + 1e-3
        return None


GestureCallback = Callable[[Gesture], None]


class ButtonGestures:
    """A gpiozero `Button` whose presses become `Gesture`s, handed to callbacks (on gpiozero's threads).

    `background=True` runs a small timer thread that fires long presses while the button is held and lone short
    presses once the double-press window closes; with `background=False` the owner calls `poll()` itself.
    """

    def __init__(
        self,
        pin: int | str,
        *,
        hold_seconds: float = 2.0,
        double_press_seconds: float = 0.5,
        bounce_seconds: float | None = 0.03,
        pull_up: bool = True,
        on_gesture: GestureCallback | None = None,
        on_short: Callable[[], None] | None = None,
        on_long: Callable[[], None] | None = None,
        on_double: Callable[[], None] | None = None,
        clock: Clock = time.monotonic,
        background: bool = True,
    ) -> None:
        from gpiozero import Button

        if bounce_seconds is not None and bounce_seconds < 0:
            raise ValueError(f"ButtonGestures: bounce_seconds must be >= 0 or None, got {bounce_seconds}")
        self.classifier = GestureClassifier(hold_seconds, double_press_seconds)
        self._clock = clock
        self._on_gesture = on_gesture
        self._handlers: dict[Gesture, Callable[[], None] | None] = {
            Gesture.SHORT: on_short,
            Gesture.LONG: on_long,
            Gesture.DOUBLE: on_double,
        }
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._history: list[tuple[Gesture, float]] = []
        self.button: Any = Button(pin, pull_up=pull_up, bounce_time=bounce_seconds or None)
        self.button.when_pressed = self._pressed
        self.button.when_released = self._released
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._timer_loop, name=f"gestures-{pin}", daemon=True)
            self._thread.start()

    @property
    def history(self) -> tuple[tuple[Gesture, float], ...]:
        with self._lock:
            return tuple(self._history)

    def _pressed(self) -> None:
        self._step(self.classifier.press)

    def _released(self) -> None:
        self._step(self.classifier.release)

    def poll(self) -> list[Gesture]:
        return self._step(self.classifier.poll)

    def _step(self, action: Callable[[float], list[Gesture]]) -> list[Gesture]:
        with self._lock:
            now = self._clock()
            gestures = action(now)
            self._history.extend((gesture, now) for gesture in gestures)
            self._wake.notify_all()
        for gesture in gestures:  # outside the lock: a callback may take its time
            self._dispatch(gesture)
        return gestures

    def _dispatch(self, gesture: Gesture) -> None:
        log.debug("button gesture: %s", gesture)
        try:
            if self._on_gesture is not None:
                self._on_gesture(gesture)
            handler = self._handlers[gesture]
            if handler is not None:
                handler()
        except Exception:
            log.exception("a %s-press handler failed", gesture)

    def _timer_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                deadline = self.classifier.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                if timeout is None or timeout > 0:
                    self._wake.wait(timeout)
                    continue
            self.poll()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.button.close()
