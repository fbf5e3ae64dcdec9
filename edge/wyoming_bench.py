"""What the Wyoming path costs over the plain daemon (`kws-edge bench-daemon`, part of `make bench`).

Both play the recording live, at real time, as a microphone would deliver it:
- plain: the real `Daemon` loop reading it from a pipe in 100 ms chunks (`kws-edge run --stdin`'s path: select,
  read, detector, events), the audio written into the pipe 100 ms at a time;
- Wyoming: a real `WakeServer` on its own event-loop thread, one client sending what Home Assistant sends
  (Detect, AudioStart, 16 kHz 16-bit mono AudioChunks of a given length, AudioStop) over loopback TCP.
All of them run at once (one thread each, a writer thread each) and each is measured by the CPU clock of its
own thread, so writers and clients are not counted; a run is the whole recording, `repeats` runs give medians.
"""

from __future__ import annotations

import io
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event, write_event
from wyoming.ping import Ping
from wyoming.wake import Detect

from edge.config import Config, GpioConfig, OutputConfig, StateConfig, WyomingConfig
from edge.model import load_model
from edge.sources import StdinSource
from edge.templates import Template, TemplateStore
from edge.wyoming_hosting import WakeServerThread
from edge.wyoming_server import WakeServer

__all__ = ["run_wyoming_bench"]

RATE = 16000
PLAIN_CHUNK_MS = 100


def _event_bytes(event: Event) -> bytes:
    buffer = io.BytesIO()
    write_event(event, buffer)
    return buffer.getvalue()


def _thread_cpu_s(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _paced(send: Callable[[bytes], Any], pieces: list[bytes], period_s: float) -> None:
    next_at = time.monotonic()
    for piece in pieces:
        send(piece)
        next_at += period_s
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _plain_run(model_path: Path, state: str, pcm: bytes) -> float:
    """CPU seconds of the daemon's audio-loop thread over the whole recording, fed live through a pipe."""
    from edge.daemon import Daemon
    from edge.outputs import EventSink

    config = Config(
        state=StateConfig(dir=state, reload_s=3600),
        output=OutputConfig(json_events=False),
        gpio=GpioConfig(enabled=False),
    )
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    step = 2 * RATE * PLAIN_CHUNK_MS // 1000
    daemon = Daemon(
        config,
        load_model(model_path),
        lambda: StdinSource(reader, step // 2),
        events=EventSink(io.StringIO(), enabled=False),
    )
    loop = threading.Thread(target=daemon.run, name="bench-plain")
    loop.start()
    with os.fdopen(write_fd, "wb", buffering=0) as pipe:
        _paced(pipe.write, [pcm[i : i + step] for i in range(0, len(pcm), step)], PLAIN_CHUNK_MS / 1000)
        time.sleep(0.3)  # the last chunk is read and processed
        cpu = _thread_cpu_s(loop)
    loop.join(30)
    reader.close()
    return cpu


def _wyoming_run(thread: WakeServerThread, port: int, pcm: bytes, chunk_ms: int) -> float:
    """CPU seconds of the server's event-loop thread to serve one live client the whole recording."""
    step = 2 * RATE * chunk_ms // 1000
    chunks = [
        _event_bytes(AudioChunk(RATE, 2, 1, pcm[i : i + step], timestamp=i // 32).event())
        for i in range(0, len(pcm), step)
    ]
    loop_thread = thread.thread
    with socket.create_connection(("127.0.0.1", port)) as client:
        answers = client.makefile("rb")
        before = _thread_cpu_s(loop_thread)
        client.sendall(_event_bytes(Detect(names=None).event()))
        client.sendall(_event_bytes(AudioStart(rate=RATE, width=2, channels=1).event()))
        _paced(client.sendall, chunks, chunk_ms / 1000)
        client.sendall(_event_bytes(AudioStop().event()) + _event_bytes(Ping().event()))
        while b'"pong"' not in answers.readline():  # every answer up to the pong: the stream is served
            pass
        return _thread_cpu_s(loop_thread) - before


def run_wyoming_bench(
    model_path: Path,
    audio: npt.NDArray[np.float32],
    template: Template,
    repeats: int = 3,
    chunk_ms: tuple[int, ...] = (10, 20, 64, 100),
) -> dict[str, Any]:
    seconds = audio.shape[0] / RATE
    pcm = np.round(audio * 32768).clip(-32768, 32767).astype("<i2").tobytes()
    plain: list[float] = []
    served: dict[int, list[float]] = {ms: [] for ms in chunk_ms}
    with tempfile.TemporaryDirectory(prefix="udkws-wyoming-bench-") as state:
        TemplateStore(state).add(template)
        servers = {
            ms: WakeServerThread(
                lambda: WakeServer(
                    load_model(model_path),
                    TemplateStore(state),
                    Config().detector,
                    WyomingConfig(uri="tcp://127.0.0.1:0"),
                    reload_s=3600,
                )
            )
            for ms in chunk_ms
        }
        ports = {ms: int(server.start().rsplit(":", 1)[1]) for ms, server in servers.items()}
        try:
            for _ in range(repeats):
                runs: list[threading.Thread] = [
                    threading.Thread(target=lambda: plain.append(_plain_run(model_path, state, pcm)))
                ]
                for ms in chunk_ms:
                    runs.append(
                        threading.Thread(
                            target=lambda ms=ms: served[ms].append(
                                _wyoming_run(servers[ms], ports[ms], pcm, ms)
                            )
                        )
                    )
                for run in runs:
                    run.start()
                for run in runs:
                    run.join()
        finally:
            for server in servers.values():
                server.stop()
    plain_s = statistics.median(plain)
    result: dict[str, Any] = {
        "audio_s": round(seconds, 2),
        "repeats": repeats,
        "played": "live (real time), every stream at once, each measured by its own thread's CPU clock",
        "plain_daemon_cpu_percent": round(100 * plain_s / seconds, 3),
    }
    for ms, runs_s in served.items():
        wyoming_s = statistics.median(runs_s)
        result[f"wyoming_{ms}ms_chunks"] = {
            "cpu_percent": round(100 * wyoming_s / seconds, 3),
            "added_percent_of_one_core": round(100 * (wyoming_s - plain_s) / seconds, 3),
            "ratio_to_plain": round(wyoming_s / plain_s, 2),
        }
    return result
