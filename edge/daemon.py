"""`kws-edge run`: the board's service loop.

One thread reads audio and runs the detector; everything that may take time (hook commands) runs on a small
worker pool, and LED patterns run on gpiozero's background threads, so nothing blocks the audio loop. Events go
to stdout as one JSON object per line (journald keeps them). systemd `Type=notify` is spoken directly on the
NOTIFY_SOCKET datagram socket: READY=1 once audio flows, WATCHDOG=1 from the loop, STOPPING=1 on the way out.
SIGTERM/SIGINT end the loop within one audio read (<= 0.2 s for stdin, one chunk for the microphone).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import write_wav
from edge.config import Config
from edge.detector import Detection, Detector
from edge.model import Encoder
from edge.outputs import EventSink, HookRunner, SystemdNotifier
from edge.resolver import KeywordResolver
from edge.sources import AudioSource, FileSource, MicSource, ResilientSource, StdinSource
from edge.templates import TemplateError, TemplateStore

__all__ = ["Daemon", "EventSink", "HookRunner", "SystemdNotifier", "detection_audio_path", "make_source"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
REJECT_WITHIN_S = 30.0


def detection_audio_path(state_dir: str | Path, keyword: str) -> Path:
    """Where the daemon keeps the audio window of a keyword's last detection (for `kws-edge reject`)."""
    return Path(state_dir) / "detections" / f"{keyword}.wav"


def _save_detection_audio(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        write_wav(temp_name, audio)
        os.replace(temp_name, path)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def make_source(config: Config, stdin: Any = None) -> Callable[[], AudioSource]:
    audio = config.audio
    chunk = SAMPLE_RATE * audio.chunk_ms // 1000
    if audio.source == "file":
        return lambda: FileSource(audio.file, chunk)
    if audio.source == "stdin":
        stream = stdin if stdin is not None else sys.stdin.buffer
        return lambda: StdinSource(stream, chunk)
    return lambda: MicSource(audio.device, audio.sample_rate, audio.chunk_ms)


class _Gpio:
    """The status LED, per-keyword LEDs and the button, when GPIO is enabled and available."""

    def __init__(self, config: Config, events: EventSink, on_gesture: Callable[[Any], None]) -> None:
        self.indicator: Any = None
        self.gestures: Any = None
        self.keyword_leds: dict[int, Any] = {}
        self.events = events
        if not config.gpio.enabled:
            return
        try:
            from edge.gpio import ButtonGestures, Indicator

            self._indicator_type = Indicator
            self.indicator = Indicator.on_pin(config.gpio.led_pin)
            self.gestures = ButtonGestures(
                config.gpio.button_pin,
                hold_seconds=config.gpio.hold_s,
                double_press_seconds=config.gpio.double_press_s,
                bounce_seconds=config.gpio.bounce_s or None,
                on_gesture=on_gesture,
            )
        except Exception as error:  # no GPIO on this machine (laptop, container): run without LEDs
            log.error("GPIO unavailable, running without LED and button: %s", error)
            events.emit({"event": "gpio_unavailable", "error": str(error)})
            self.close()
            self.indicator = self.gestures = None

    def show_detection(self, detection: Detection) -> None:
        if self.indicator is None:
            return
        self.indicator.detection(detection.keyword, detection.score)
        self.events.emit(
            {"event": "led", "pin": "status", "pattern": "detection", "keyword": detection.keyword}
        )
        if detection.pin is not None:
            try:
                led = self.keyword_leds.get(detection.pin)
                if led is None:
                    led = self._indicator_type.on_pin(detection.pin, name=detection.keyword)
                    self.keyword_leds[detection.pin] = led
                led.detection(detection.keyword, detection.score)
                self.events.emit(
                    {
                        "event": "led",
                        "pin": detection.pin,
                        "pattern": "detection",
                        "keyword": detection.keyword,
                    }
                )
            except Exception as error:
                log.error("LED on pin %d for %r failed: %s", detection.pin, detection.keyword, error)

    def close(self) -> None:
        for part in (self.gestures, self.indicator, *self.keyword_leds.values()):
            if part is not None:
                try:
                    part.close()
                except Exception as error:
                    log.debug("closing GPIO: %s", error)


class Daemon:
    """The detection service. `run()` returns the exit status; `stop()` (or SIGTERM) ends it promptly."""

    def __init__(
        self,
        config: Config,
        encoder: Encoder,
        source_factory: Callable[[], AudioSource],
        events: EventSink | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.events = events or EventSink(enabled=config.output.json_events)
        self.notifier = notifier or SystemdNotifier()
        self.store = TemplateStore(config.state.dir)
        self.stop_event = threading.Event()
        self.source = ResilientSource(
            source_factory,
            self.stop_event,
            config.audio.retry_initial_s,
            config.audio.retry_max_s,
            self.events.emit,
        )
        self.detector = Detector(encoder, (), config.detector)
        self.resolver = KeywordResolver.for_model(config, encoder.model_path, encoder.sha256)
        self.hooks = HookRunner(config.output.hook_timeout_s, config.output.hook_workers, self.events)
        self.mqtt: Any = None  # edge.mqtt.MqttPublisher when [mqtt] is enabled
        if config.mqtt.enabled:
            from edge.mqtt import MqttPublisher

            self.mqtt = MqttPublisher(config.mqtt, self.events.emit)  # a bad password file fails here
        self.wyoming: Any = None  # edge.wyoming_hosting.WakeServerThread once started
        # A count, not a list: each detection holds 1.5 s of audio, and a list grew by ~3 MB per hour of speech.
        self.detection_count = 0
        self._gestures: queue.Queue[Any] = queue.Queue()
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        # SIGHUP only raises this flag; the loop reloads between chunks. Reloading inside the handler could swap
        # the keywords under a window being scored (the handler runs between any two bytecodes of the loop).
        self._reload_requested = threading.Event()
        self._last_detection: Detection | None = None
        self.gpio = _Gpio(config, self.events, self._gestures.put)
        self.enrollment: Any = None
        if self.gpio.indicator is not None:
            self._make_enrollment()

    def _make_enrollment(self) -> None:
        from edge.enrollment import EnrollmentConfig, EnrollmentSession

        gpio = self.config.gpio
        self.enrollment = EnrollmentSession(
            self.encoder,
            self.store,
            self.gpio.indicator,
            EnrollmentConfig(takes=gpio.takes, confirm_seconds=gpio.confirm_s, pin_pool=gpio.keyword_pins),
            on_keyword_added=lambda template: self.reload_templates(force=True),
            on_keyword_removed=lambda name: self.reload_templates(force=True),
            assess=self._assess,
        )

    def _assess(self, template: Any) -> str | None:
        """The budget's verdict on a keyword just enrolled with the button: an event, and the LED's warning."""
        resolved = self.resolver.resolve_one(template)
        budget = resolved.budget.as_event() if resolved.budget is not None else {}
        self.events.emit({"event": "enrolled", **resolved.as_event(), **budget})
        return resolved.budget.warning if resolved.budget is not None else None

    def stop(self, *_: Any) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload_requested.set())

    def reload_templates(self, force: bool = False) -> None:
        signature = self.store.signature()
        if not force and signature == self._signature:
            return
        self._signature = signature
        templates = self.store.load_for_model(
            self.encoder.sha256, self.encoder.frontend_fingerprint, self.encoder.embedding_dim
        )
        resolved = self.resolver.resolve(templates)
        self.detector.set_templates([r.template for r in resolved])
        names = [t.name for t in templates]
        log.info(
            "keywords active: %s",
            ", ".join(
                f"{r.template.name} (threshold {r.template.threshold:.3f}, {r.threshold_source})"
                for r in resolved
            )
            or "none (enroll one: `kws-edge enroll NAME a.wav b.wav c.wav`)",
        )
        self.events.emit({"event": "keywords", "active": names, "keywords": [r.as_event() for r in resolved]})
        if self.mqtt is not None:
            self.mqtt.keywords(names)
        if force and self.wyoming is not None:
            self.wyoming.request_reload()

    def reject_last(self) -> bool:
        """Mark the most recent detection (within 30 s of audio) as a false trigger: a negative template."""
        last = self._last_detection
        if last is None or (self.detector.samples_seen - last.end_sample) / SAMPLE_RATE > REJECT_WITHIN_S:
            log.info("nothing to reject: no detection in the last %.0f s", REJECT_WITHIN_S)
            return False
        embedding = self.encoder.embed_windows(last.audio[None])[0]
        try:
            self.store.add_negative(last.keyword, embedding)
        except (TemplateError, OSError) as error:
            log.error("could not mark the detection of %r as false: %s", last.keyword, error)
            return False
        self._last_detection = None
        self.events.emit({"event": "rejected", "keyword": last.keyword, "time_s": round(last.time_s, 3)})
        if self.gpio.indicator is not None:
            self.gpio.indicator.show("take_rejected", f"false trigger of {last.keyword} marked")
        self.reload_templates(force=True)
        return True

    def _handle_gesture(self, gesture: Any) -> None:
        from edge.gpio import Gesture

        self.events.emit({"event": "button", "gesture": str(gesture)})
        idle = self.enrollment is None or not self.enrollment.busy
        if gesture is Gesture.DOUBLE and idle:
            self.reject_last()
        elif self.enrollment is not None:
            self.enrollment.gesture(gesture)

    def _handle_detection(self, detection: Detection) -> None:
        self.detection_count += 1
        self._last_detection = detection
        self.events.emit(detection.to_event())
        self.gpio.show_detection(detection)
        self.hooks.submit(detection)
        if self.mqtt is not None:
            self.mqtt.detection(detection)
        if self.config.state.keep_detection_audio:
            try:
                _save_detection_audio(
                    detection_audio_path(self.config.state.dir, detection.keyword), detection.audio
                )
            except OSError as error:
                log.warning("could not keep the detection audio: %s", error)

    def _start_network(self) -> None:
        """MQTT, and the Wyoming service on its own thread and interpreter; a socket that cannot listen fails."""
        if self.mqtt is not None:
            self.mqtt.start()
        if self.config.wyoming.enabled:
            from edge.model import load_model
            from edge.wyoming_hosting import WakeServerThread
            from edge.wyoming_server import WakeServer

            encoder = load_model(self.encoder.model_path, num_threads=self.config.model.num_threads)
            resolver = self.resolver.fork()  # the server's own thread: its own cache, the same cohort
            self.wyoming = WakeServerThread(
                lambda: WakeServer(
                    encoder,
                    TemplateStore(self.config.state.dir),
                    self.config.detector,
                    self.config.wyoming,
                    self.config.state.reload_s,
                    self.events.emit,
                    resolver,
                )
            )
            self.wyoming.start()

    def _stop_network(self) -> None:
        if self.wyoming is not None:
            self.wyoming.stop()
        if self.mqtt is not None:
            self.mqtt.close()

    def run(self) -> int:
        self.reload_templates(force=True)
        try:
            self._start_network()
        except BaseException:
            self._stop_network()
            raise
        self.events.emit(
            {
                "event": "started",
                "model": str(self.encoder.model_path),
                "model_sha256": self.encoder.sha256,
                "source": self.config.audio.source,
                "gate": self.config.detector.gate,
            }
        )
        # Ready once the model and keywords are loaded: a missing microphone is retried inside the loop, and the
        # service must count as up (and keep pinging the watchdog) meanwhile.
        self.notifier.notify("READY=1")
        reconnects = 0
        next_reload = time.monotonic() + self.config.state.reload_s
        try:
            while not self.stop_event.is_set():
                chunk = self.source.read()
                if chunk is None:
                    break
                now = time.monotonic()
                self.notifier.watchdog(now)
                if self.source.reconnects != reconnects:
                    reconnects = self.source.reconnects
                    self.detector.discontinuity()
                while not self._gestures.empty():
                    self._handle_gesture(self._gestures.get_nowait())
                if chunk.size:
                    enrolling = self.enrollment is not None and self.enrollment.busy
                    if self.enrollment is not None:
                        self.enrollment.feed(chunk)
                    for detection in self.detector.push(chunk):
                        if not enrolling:
                            self._handle_detection(detection)
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    self.reload_templates(force=True)
                elif now >= next_reload:
                    next_reload = now + self.config.state.reload_s
                    self.reload_templates()
        finally:
            self.notifier.notify("STOPPING=1")
            self.source.close()
            self.hooks.close()
            self.gpio.close()
            self._stop_network()
        seconds = self.detector.samples_seen / SAMPLE_RATE
        self.events.emit(
            {
                "event": "stopped",
                "audio_s": round(seconds, 3),
                "detections": self.detection_count,
                "windows": self.detector.windows_evaluated,
                "windows_gated": self.detector.windows_gated,
            }
        )
        return 0
