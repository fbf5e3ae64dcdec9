"""LED patterns and button gestures on gpiozero's MockFactory (pins driven with drive_low / drive_high)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gpiozero import LED, PWMLED
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.gpio import PATTERNS, ButtonGestures, Gesture, GestureClassifier, Indicator

BUTTON_PIN = 26
LED_PIN = 17


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ Indicator


def test_patterns_are_told_apart() -> None:
    shapes = {name: (p.on_s, p.off_s, p.count, p.steady) for name, p in PATTERNS.items()}
    for (a, shape_a), (b, shape_b) in itertools.combinations(shapes.items(), 2):
        assert shape_a != shape_b, f"{a} and {b} look the same"
    assert all(p.meaning for p in PATTERNS.values())
    required = {
        "detection", "speak_now", "take_accepted", "take_rejected", "keyword_saved", "removal_prompt", "error",
    }  # fmt: skip
    assert required <= set(PATTERNS)


def test_every_pattern_is_documented() -> None:
    board = (Path(__file__).resolve().parents[1] / "docs" / "board.md").read_text()
    for name, pattern in PATTERNS.items():
        assert f"| `{name}` |" in board, f"docs/board.md lacks the {name} pattern"
        assert pattern.meaning.split(":")[-1].strip() in board


def test_indicator_drives_the_led_and_records_what_it_showed(mock_pins: MockFactory) -> None:
    clock = FakeClock()
    led = LED(LED_PIN)
    indicator = Indicator(led, clock=clock)
    pin = mock_pins.pin(LED_PIN)
    indicator.speak_now(1, 3)
    assert led.is_lit and pin.state
    clock.now = 1.5
    indicator.take_rejected("too quiet: peak -50.0 dBFS")
    wait_for(lambda: not led.is_lit and len(pin.states) == 1 + 2 * PATTERNS["take_rejected"].count)  # type: ignore[operator]
    # states: initial off, steady on, then 8 blinks (the first "on" merges with the steady light).
    values = [state.state for state in pin.states]
    assert values[:2] == [False, True] and values[-1] is False
    assert sum(1 for a, b in itertools.pairwise(values) if a and not b) == PATTERNS["take_rejected"].count
    assert [(e.pattern, e.detail, e.at) for e in indicator.events] == [
        ("speak_now", "take 1/3", 0.0),
        ("take_rejected", "too quiet: peak -50.0 dBFS", 1.5),
    ]
    indicator.cancelled()
    assert not led.is_lit and indicator.pattern_names()[-1] == "cancelled"
    with pytest.raises(ValueError, match="unknown pattern 'party'"):
        indicator.show("party")
    indicator.close()


def test_blinking_is_in_the_background(mock_pins: MockFactory) -> None:
    indicator = Indicator(LED(LED_PIN))
    started = time.monotonic()
    indicator.error("model file missing")  # blinks until the next pattern
    indicator.keyword_saved("keyword-1")  # 2.6 s of blinking
    assert time.monotonic() - started < 0.5
    assert indicator.pattern_names() == ["error", "keyword_saved"]
    indicator.off()
    indicator.close()


def test_timing_of_a_detection_flash(mock_pins: MockFactory) -> None:
    led = LED(LED_PIN)
    pin = mock_pins.pin(LED_PIN)
    pin.clear_states()
    Indicator(led).detection("keyword-1", 0.81)
    wait_for(lambda: len(pin.states) == 3)
    pin.assert_states_and_times([(0.0, False), (0.0, True), (PATTERNS["detection"].on_s, False)])
    led.close()


def test_indicator_on_a_pwm_led(mock_pwm_pins: MockFactory) -> None:
    led = PWMLED(LED_PIN)
    indicator = Indicator(led, name="keyword-1")
    indicator.speak_now(2, 3)
    assert led.value == 1.0
    indicator.removal_prompt("keyword-1")
    wait_for(lambda: led.value == 0.0)
    indicator.off()
    assert indicator.pattern_names() == ["speak_now", "removal_prompt"]
    indicator.close()


def test_indicator_on_pin_builds_its_own_led(mock_pins: MockFactory) -> None:
    indicator = Indicator.on_pin(LED_PIN)
    indicator.speak_now(1, 3)
    assert mock_pins.pin(LED_PIN).state
    indicator.close()


# --------------------------------------------------------- GestureClassifier


def test_short_press_is_reported_once_the_double_press_window_closes() -> None:
    gestures = GestureClassifier(hold_seconds=1.0, double_press_seconds=0.4)
    assert gestures.press(0.0) == [] and gestures.release(0.1) == []
    assert gestures.next_deadline() == pytest.approx(0.501)
    assert gestures.poll(0.45) == []
    assert gestures.poll(0.51) == [Gesture.SHORT]
    assert gestures.poll(5.0) == [] and gestures.next_deadline() is None


def test_double_press() -> None:
    gestures = GestureClassifier(hold_seconds=1.0, double_press_seconds=0.4)
    gestures.press(0.0)
    gestures.release(0.1)
    assert gestures.press(0.3) == []
    assert gestures.release(0.4) == [Gesture.DOUBLE]
    assert gestures.poll(3.0) == []


def test_second_press_too_late_is_two_short_presses() -> None:
    gestures = GestureClassifier(hold_seconds=1.0, double_press_seconds=0.4)
    gestures.press(0.0)
    gestures.release(0.1)
    assert gestures.press(0.9) == [Gesture.SHORT]
    gestures.release(1.0)
    assert gestures.poll(1.5) == [Gesture.SHORT]


def test_long_press_fires_while_held_and_the_release_adds_nothing() -> None:
    gestures = GestureClassifier(hold_seconds=2.0, double_press_seconds=0.4)
    gestures.press(10.0)
    assert gestures.poll(11.9) == []
    assert gestures.next_deadline() == 12.0
    assert gestures.poll(12.0) == [Gesture.LONG]
    assert gestures.poll(13.0) == []
    assert gestures.release(15.0) == [] and gestures.poll(20.0) == []


def test_long_press_detected_at_release_when_nobody_polled() -> None:
    gestures = GestureClassifier(hold_seconds=2.0, double_press_seconds=0.4)
    gestures.press(0.0)
    assert gestures.release(2.5) == [Gesture.LONG]


def test_short_then_long_press() -> None:
    gestures = GestureClassifier(hold_seconds=1.0, double_press_seconds=0.4)
    gestures.press(0.0)
    gestures.release(0.1)
    gestures.press(0.3)
    assert gestures.poll(1.3) == [Gesture.SHORT, Gesture.LONG]
    assert gestures.release(2.0) == []


def test_repeated_press_edges_are_ignored() -> None:
    gestures = GestureClassifier(hold_seconds=1.0, double_press_seconds=0.4)
    gestures.press(0.0)
    gestures.press(0.05)
    gestures.release(0.1)
    gestures.release(0.12)
    assert gestures.poll(1.0) == [Gesture.SHORT]


def test_classifier_rejects_nonsense_timings() -> None:
    with pytest.raises(ValueError, match="hold_seconds"):
        GestureClassifier(hold_seconds=0)


# ------------------------------------------------------------ ButtonGestures


def test_button_gestures_from_mock_pin_edges(mock_pins: MockFactory) -> None:
    clock = FakeClock()
    seen: list[Gesture] = []
    shorts: list[int] = []
    buttons = ButtonGestures(
        BUTTON_PIN,
        hold_seconds=1.5,
        double_press_seconds=0.4,
        bounce_seconds=None,
        on_gesture=seen.append,
        on_short=lambda: shorts.append(1),
        clock=clock,
        background=False,
    )
    pin = mock_pins.pin(BUTTON_PIN)
    assert pin.state  # pulled up: idle high, pressed low

    def press(at: float, release_at: float) -> None:
        clock.now = at
        pin.drive_low()
        clock.now = release_at
        pin.drive_high()

    press(0.0, 0.1)
    clock.now = 0.6
    buttons.poll()
    press(1.0, 1.1)
    press(1.3, 1.4)  # double
    clock.now = 2.0
    pin.drive_low()
    clock.now = 3.6
    buttons.poll()  # held 1.6 s: long, while still held
    clock.now = 4.0
    pin.drive_high()
    assert seen == [Gesture.SHORT, Gesture.DOUBLE, Gesture.LONG] and shorts == [1]
    assert [at for _, at in buttons.history] == [0.6, 1.4, 3.6]
    buttons.close()


def test_button_gestures_timer_thread_fires_without_polling(mock_pins: MockFactory) -> None:
    fired: list[tuple[Gesture, float]] = []
    done = threading.Event()

    def on_gesture(gesture: Gesture) -> None:
        fired.append((gesture, time.monotonic()))
        if len(fired) == 2:
            done.set()

    buttons = ButtonGestures(
        BUTTON_PIN, hold_seconds=0.3, double_press_seconds=0.15, bounce_seconds=None, on_gesture=on_gesture
    )
    pin = mock_pins.pin(BUTTON_PIN)
    pin.drive_low()
    pin.drive_high()  # a short press: reported by the timer once the double-press window closes
    time.sleep(0.3)
    pressed_at = time.monotonic()
    pin.drive_low()  # held: the long press fires while the button is still down
    assert done.wait(3.0)
    assert [gesture for gesture, _ in fired] == [Gesture.SHORT, Gesture.LONG]
    assert fired[1][1] - pressed_at == pytest.approx(0.3, abs=0.2)
    assert pin.state is False  # still held when it fired
    pin.drive_high()
    buttons.close()


def test_a_failing_handler_does_not_break_the_button(mock_pins: MockFactory) -> None:
    clock = FakeClock()
    seen: list[Gesture] = []

    def explode() -> None:
        raise RuntimeError("handler bug")

    buttons = ButtonGestures(
        BUTTON_PIN,
        on_double=explode,
        on_gesture=seen.append,
        clock=clock,
        background=False,
        bounce_seconds=None,
    )
    pin = mock_pins.pin(BUTTON_PIN)
    for at in (0.0, 0.2):
        clock.now = at
        pin.drive_low()
        clock.now = at + 0.05
        pin.drive_high()
    clock.now = 5.0
    pin.drive_low()
    clock.now = 5.1
    pin.drive_high()
    clock.now = 6.0
    buttons.poll()
    assert seen == [Gesture.DOUBLE, Gesture.SHORT]
    buttons.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 3.0), st.floats(0.01, 2.0)), min_size=1, max_size=12))
def test_every_press_is_accounted_for_exactly_once(presses: list[tuple[float, float]]) -> None:
    """Whatever the timing, each press ends up in one SHORT, one LONG, or half of one DOUBLE."""
    gestures = GestureClassifier(hold_seconds=1.0, double_press_seconds=0.4)
    seen: list[Gesture] = []
    now = 0.0
    for held, gap in presses:
        seen += gestures.press(now)
        deadline = gestures.next_deadline()
        if deadline is not None and deadline <= now + held:
            seen += gestures.poll(deadline)  # the timer thread firing while the button is held
        now += held
        seen += gestures.release(now)
        now += gap
    seen += gestures.poll(now + 10.0)
    counted = seen.count(Gesture.SHORT) + seen.count(Gesture.LONG) + 2 * seen.count(Gesture.DOUBLE)
    assert counted == len(presses), seen
    assert gestures.next_deadline() is None
