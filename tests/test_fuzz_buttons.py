"""Fuzzing the button: any sequence of presses, releases, bounces and pauses, alone and during enrollment.

ButtonGestures runs on gpiozero's MockFactory pins with a test clock: every press ends up in exactly one
gesture and nothing raises. The enrollment session is then driven by any interleaving of gestures and audio
(silence, room tone, real takes, clipped and cut-off ones) with the real (random-weight) int8 encoder: it never
raises, every keyword it leaves on disk is complete, and a minute of quiet always brings it back to idle.
"""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from gpiozero import LED
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from edge.audio import load_audio
from edge.enrollment import EnrollmentConfig, EnrollmentSession, SessionState
from edge.gpio import PATTERNS, ButtonGestures, Gesture, Indicator
from edge.model import Encoder, load_model
from edge.takes import TakeChecks
from edge.templates import Template, TemplateStore
from tests.conftest import installed_mock_factory
from tests.edge_fixtures import random_model_path  # noqa: F401

DEMO = Path(__file__).resolve().parents[1] / "edge" / "demo"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
RATE = 16000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


edges = st.lists(
    st.tuples(
        st.sampled_from(["press", "release", "poll"]), st.sampled_from([0.0, 0.001, 0.05, 0.3, 0.7, 2.5])
    ),
    max_size=40,
)


@FUZZ
@given(steps=edges)
def test_any_edge_sequence_gives_one_gesture_per_press(steps: list[tuple[str, float]]) -> None:
    with installed_mock_factory() as factory:
        clock, seen = Clock(), []
        buttons = ButtonGestures(
            27, hold_seconds=2.0, double_press_seconds=0.6, bounce_seconds=None, on_gesture=seen.append,
            clock=clock, background=False,
        )  # fmt: skip
        pin = factory.pin(27)
        presses, held = 0, False
        try:
            for step, pause in steps:
                clock.now += pause
                if step == "press":
                    presses += not held
                    held = True
                    pin.drive_low()  # pulled up: pressed is low; a repeated edge does nothing
                elif step == "release":
                    held = False
                    pin.drive_high()
                else:
                    buttons.poll()
            clock.now += 10.0
            buttons.poll()
            if held:
                pin.drive_high()
                clock.now += 10.0
                buttons.poll()
        finally:
            buttons.close()
    assert all(isinstance(g, Gesture) for g in seen)
    assert seen.count(Gesture.SHORT) + seen.count(Gesture.LONG) + 2 * seen.count(Gesture.DOUBLE) == presses, (
        seen
    )
    assert [g for g, _ in buttons.history] == seen


@pytest.fixture(scope="module")
def encoder(random_model_path: Path) -> Encoder:
    return load_model(random_model_path)


@pytest.fixture(scope="module")
def sounds(kws_data_dir: Path) -> dict[str, np.ndarray]:
    take = load_audio(DEMO / "enroll_happy_1.wav")
    pink = load_audio(kws_data_dir / "gsc_noise" / "pink_noise.flac")[: 3 * RATE]
    return {
        "silence": np.zeros(RATE, dtype=np.float32),
        "room": (pink / np.sqrt(np.mean(pink**2)) * 10 ** (-60 / 20)).astype(np.float32),
        "take": np.concatenate([np.zeros(RATE // 2), take, np.zeros(RATE)]).astype(np.float32),
        "other_take": np.concatenate([np.zeros(RATE // 2), load_audio(DEMO / "happy_012c8314_0.wav")]).astype(
            np.float32
        ),
        "clipped": np.clip(take * 40, -1, 1).astype(np.float32),
        "fragment": take[: RATE // 20],
    }


# Takes are the likeliest step, so that keywords get saved and then removed as well as refused and cancelled.
SOUNDS = ["take"] * 5 + ["other_take"] * 2 + ["silence", "room", "clipped", "fragment"]
actions = st.lists(
    st.one_of(
        st.sampled_from([Gesture.SHORT, Gesture.SHORT, Gesture.LONG, Gesture.DOUBLE]),
        st.tuples(st.sampled_from(SOUNDS), st.sampled_from([1, 160, 1023, 1600, 4000, 64000])),
    ),
    max_size=30,
)


@FUZZ
@given(steps=actions, enrolled=st.booleans())
@example(
    steps=[Gesture.LONG, ("silence", 1600), Gesture.DOUBLE, Gesture.SHORT], enrolled=True
)  # removed, then again
@example(steps=[Gesture.SHORT, *[("take", 1600)] * 3, Gesture.LONG, Gesture.DOUBLE], enrolled=False)  # saved
def test_any_gestures_during_enrollment(
    encoder: Encoder, sounds: dict[str, np.ndarray], tmp_path: Path, steps: list[Gesture | tuple[str, int]],
    enrolled: bool,
) -> None:  # fmt: skip
    store = TemplateStore(tempfile.mkdtemp(dir=tmp_path))
    if enrolled:  # a keyword from an earlier enrollment, so that removals happen too
        embedding = encoder.embed_windows(sounds["take"][: encoder.window_samples][None])[0]
        store.add(
            Template("keyword-1", embedding, encoder.sha256, encoder.frontend_fingerprint, pin=5, takes=3)
        )
    with installed_mock_factory():
        led = LED(17)
        try:
            _enroll_with(encoder, sounds, Indicator(led), store, steps)
        finally:
            led.close()


def _enroll_with(
    encoder: Encoder, sounds: dict[str, np.ndarray], indicator: Indicator, store: TemplateStore,
    steps: list[Gesture | tuple[str, int]],
) -> None:  # fmt: skip
    config = EnrollmentConfig(
        pin_pool=(5, 6), checks=TakeChecks(consistency_threshold=-1.0), max_rejections=3
    )
    session = EnrollmentSession(encoder, store, indicator, config)
    for step in steps:
        if isinstance(step, Gesture):
            session.gesture(step)
        else:
            sound, chunk = sounds[step[0]], step[1]
            for start in range(0, sound.shape[0], chunk):
                session.feed(sound[start : start + chunk])
        assert isinstance(session.state, SessionState) and session.busy == (
            session.state is not SessionState.IDLE
        )
        assert len(store.names()) == len(store.list()) <= 2  # every file complete; at most one per LED pin
    event(f"patterns shown: {', '.join(sorted(set(indicator.pattern_names())))}")
    for _ in range(60):  # a minute of quiet: whatever was going on ends
        session.feed(sounds["silence"])
    assert session.state is SessionState.IDLE
    assert set(indicator.pattern_names()) <= set(PATTERNS)
    assert {t.pin for t in store.list()} <= {5, 6}
