"""Fuzzing the Wyoming wake-word service over a real socket: whatever a client sends costs that connection at most.

One real server (`WakeServerThread`, as inside `kws-edge run`) serves the whole module with 'happy' enrolled and
'short', a keyword file whose vector has the wrong length. Hypothesis sends arbitrary bytes, damaged and
oversized headers, lying lengths, audio in any format claim and with odd byte counts, events in any order,
timestamps of any size, and disconnects mid-event. After every example: the connection got at most one Error
event, as its last, whose single line names the problem and matches the one warning logged for that client;
nothing in the log carries a traceback; the keyword files are unchanged; and a fresh client still gets
Describe -> Info and the Detection of the keyword in 4 s of real audio. Unit-level properties of `read_event`,
`PcmFormat.parse` and `PcmConverter` follow, then regressions of the bugs found.
"""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, read_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.wake import Detect

from edge.audio import decode_pcm, load_audio, resample
from edge.commands import enroll_from_audio
from edge.config import DetectorConfig, WyomingConfig
from edge.model import load_model
from edge.templates import Template, TemplateStore
from edge.wyoming_events import MAX_BODY_BYTES, MAX_HEADER_BYTES, PcmConverter, PcmFormat, ProtocolError
from edge.wyoming_events import read_event as server_read_event
from edge.wyoming_hosting import WakeServerThread
from edge.wyoming_server import WakeServer
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401
from tests.test_wyoming_server import encode_pcm

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
UNIT = settings(max_examples=150, deadline=None)
TIMEOUT_S = 30.0  # a reply slower than this is a hang (generous: a loaded 2-core machine)
ANSWERS = {"info", "pong", "error", "detection", "not-detected"}
# Strings as JSON can carry them: line breaks, controls, lone surrogates (which UTF-8 cannot encode).
any_text = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["", "a\nb", "\ud800", "x\udfff", "\x00", "\u2028", "\x1b[2J", "happy\r"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=10,
)
format_values = st.one_of(  # rate/width/channels as a client might send them
    st.sampled_from([1, 2, 3, 4, 8, 16000, 22050, 44100, 48000, 16001, 192000, 192001]),
    st.integers(-(2**40), 2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.sampled_from(["16000", "2", ""]),
    st.lists(st.integers(), max_size=2),
)


class Records(logging.Handler):
    """Every WARNING+ record of the process (the server runs on a thread of it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._guard = threading.Lock()  # not `lock`: Handler.handle() holds that one around emit()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._guard:
            taken, self.records = self.records, []
        return taken


class Service:
    """The running server, its keyword folder as it must stay, 4 s of real audio holding the keyword once (16 kHz
    16-bit mono) and the log. Not a dataclass: hypothesis would print all of it with each failing example."""

    def __init__(self, port: int, keywords: Path, pcm: bytes, log: Records) -> None:
        self.port, self.keywords, self.pcm, self.log = port, keywords, pcm, log
        self.files = _keyword_files(keywords)

    def __repr__(self) -> str:
        return f"Service(port={self.port})"


def _keyword_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def service(
    random_model_path: Path, keyword_stream: KeywordStream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    encoder = load_model(random_model_path)
    store = TemplateStore(tmp_path_factory.mktemp("wyoming") / "state")
    clip = load_audio(keyword_stream.keyword_clip)
    enroll_from_audio("happy", [("clip", clip)], encoder, store, check=False)
    wrong = np.ones(encoder.embedding_dim - 3)  # a hand-edited file: this model's sha, a vector too short
    store.add(Template("short", wrong, encoder.sha256, encoder.frontend_fingerprint))
    server = WakeServerThread(
        lambda: WakeServer(
            encoder,
            TemplateStore(store.state_dir),
            DetectorConfig(threshold=0.7),  # the random test model scores the keyword about 0.8
            WyomingConfig(uri="tcp://127.0.0.1:0"),
            reload_s=0.2,
        )
    )
    log = Records()
    logging.getLogger().addHandler(log)
    try:
        port = int(server.start().rsplit(":", 1)[1])
        keywords = store.state_dir / "keywords"
        pcm = encode_pcm(load_audio(keyword_stream.path)[: 16000 * 4], 16000, 2, 1)  # 'happy' at 1.5 s
        yield Service(port, keywords, pcm, log)
    finally:
        server.stop()
        logging.getLogger().removeHandler(log)


def frame(header: Any, tail: bytes = b"") -> bytes:
    """A header line as given (any JSON value), then raw bytes."""
    return json.dumps(header).encode() + b"\n" + tail


def events_bytes(*events: Event) -> bytes:
    """Events framed as the wyoming library frames them, but with JSON's ASCII escapes: a client's strings
    may hold lone surrogates, which only those can carry."""
    framed = []
    for event in events:
        data = json.dumps(event.data).encode() if event.data else b""
        payload = event.payload or b""
        header = {"type": event.type, "version": "1.10.0", "data_length": len(data)}
        framed.append(frame(header | {"payload_length": len(payload)} if payload else header, data + payload))
    return b"".join(framed)


@dataclass
class Exchange:
    answers: list[Event]
    client: int  # our port: the server's log names the client by it
    complete: bool  # everything sent and the answers read (else an Error may be lost in a reset)


def exchange(service: Service, data: bytes, ending: str = "ping") -> Exchange:
    """Send `data` (then a Ping, then our end of the stream) from one thread while this one reads the answers
    until the server closes. ending="reset" closes abruptly after `data` (RST) and reads nothing."""
    service.log.take()  # what an earlier, failed example left
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=TIMEOUT_S)
    client = sock.getsockname()[1]
    if ending == "reset":
        sock.sendall(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        return Exchange([], client, False)
    sent: list[bool] = []

    def send() -> None:
        try:
            sock.sendall(data + (events_bytes(Ping(text="end").event()) if ending == "ping" else b""))
            sock.shutdown(socket.SHUT_WR)
            sent.append(True)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answers: list[Event] = []
    with sock, sock.makefile("rb") as stream:
        try:
            while (event := read_event(stream)) is not None:
                answers.append(event)
        except TimeoutError:
            raise AssertionError(f"the server neither answered nor closed within {TIMEOUT_S} s") from None
        except ConnectionResetError:
            pass
    sender.join(TIMEOUT_S)
    assert not sender.is_alive(), "the server stopped reading and never closed"
    return Exchange(answers, client, bool(sent))


def check_answers(service: Service, result: Exchange, problems: list[str] | None = None) -> Error | None:
    """The properties of one exchange; `problems` are words of which an Error must name one (None: no Error
    expected, [] : any one-line Error may come). Returns the Error received, if any."""
    assert all(a.type in ANSWERS for a in result.answers), result.answers
    errors = [Error.from_event(a) for a in result.answers if Error.is_type(a.type)]
    assert len(errors) <= 1 and (not errors or Error.is_type(result.answers[-1].type)), result.answers
    if problems is None:
        assert not errors, errors
    elif problems and result.complete:
        assert errors, f"no Error for {problems}: {result.answers}"
    ours = [r for r in service.log.records if f":{result.client}:" in r.getMessage()]
    warnings = [r.getMessage() for r in ours if r.levelno >= logging.WARNING]
    assert len(warnings) <= 1, warnings
    if errors:
        text = errors[0].text
        assert text and "\n" not in text, text
        assert problems is None or not problems or any(p in text for p in problems), (problems, text)
        assert len(warnings) == 1 and text in warnings[0], (text, warnings)
    return errors[0] if errors else None


def assert_healthy(service: Service) -> None:
    """No traceback anywhere in the log, keyword files unchanged, and a fresh client served as usual."""
    records = service.log.take()
    for record in records:
        message = record.getMessage()
        assert record.exc_info is None and "\n" not in message, (message, record.exc_info)
        assert "internal error" not in message, message
    assert _keyword_files(service.keywords) == service.files, "a keyword file changed"

    async def client() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", service.port) as wyoming:
            await wyoming.write_event(Describe().event())
            await wyoming.write_event(Detect(names=None).event())
            await wyoming.write_event(AudioStart(16000, 2, 1).event())
            for offset in range(0, len(service.pcm), 3200):
                await wyoming.write_event(
                    AudioChunk(16000, 2, 1, service.pcm[offset : offset + 3200]).event()
                )
            await wyoming.write_event(AudioStop().event())
            await wyoming.write_event(Ping().event())
            answers = []
            while (event := await asyncio.wait_for(wyoming.read_event(), TIMEOUT_S)) is not None:
                if Pong.is_type(event.type):
                    return answers
                answers.append(event)
            raise AssertionError(f"the server closed a well-behaved client: {answers}")

    answers = asyncio.run(client())
    models = {m.name: m.installed for m in Info.from_event(answers[0]).wake[0].models}
    assert models == {"happy": True, "short": False}, models
    assert [a.type for a in answers[1:]] == ["detection"], answers


# ------------------------------------------------------------------------------------ the real server


@FUZZ
@given(raw=st.binary(max_size=600) | st.lists(st.binary(max_size=40), max_size=8).map(b"\n".join))
def test_any_bytes(service: Service, raw: bytes) -> None:
    check_answers(service, exchange(service, raw), problems=[])
    assert_healthy(service)


def _header_problems(header: Any) -> list[str]:
    """What an Error for this header must name (any one of them); [] when the header is fine."""
    if not isinstance(header, dict):
        return ["must be a JSON object"]
    problems = []
    if not isinstance(header.get("type"), str) or not header.get("type"):
        problems.append("'type'")
    if header.get("data") is not None and not isinstance(header.get("data"), dict):
        problems.append("'data'")
    for key in ("data_length", "payload_length"):
        value = header.get(key)
        if value is not None and not (type(value) is int and 0 <= value <= MAX_BODY_BYTES):
            problems.append(key)
    return problems


@FUZZ
@given(
    header=st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["ping", "describe", "audio-chunk", "x"]) | any_text | json_values,
            "data": json_values,
            "data_length": st.integers(-5, 50) | json_values,
            "payload_length": st.integers(-5, 50)
            | st.sampled_from([MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 2**64])
            | json_values,
            "version": json_values,
        },
    )
    | json_values,
    tail=st.binary(max_size=60),
    damage=st.sampled_from(["none", "truncate", "pad", "oversize"]),
    ending=st.sampled_from(["ping", "fin", "reset"]),
)
def test_damaged_headers_and_lying_lengths(
    service: Service, header: Any, tail: bytes, damage: str, ending: str
) -> None:
    """Headers of any shape with data/payload lengths that are wrong, lie (longer or shorter than the bytes
    that follow), are truncated, or run past the 64 KiB header limit."""
    line = json.dumps(header).encode()
    if damage == "truncate":
        line = line[: max(0, len(line) - 1 - len(tail) % 7)]
    elif damage == "pad" and isinstance(header, dict):  # just under the limit
        line = json.dumps({**header, "pad": "x" * (MAX_HEADER_BYTES - 2000)}).encode()
    elif damage == "oversize":
        line = line + b" " * (MAX_HEADER_BYTES + 10)
    result = exchange(service, line + b"\n" + tail, ending)
    if damage == "oversize":
        problems = ["longer than"]
    else:  # a truncated header may still be JSON; what follows a good header may be anything
        problems = _header_problems(header) if damage != "truncate" else []
    check_answers(service, result, problems)
    assert_healthy(service)


def _format_problems(data: dict[str, Any]) -> list[str]:
    """What an Error for this format claim must name: a field, or the rate as one that cannot be resampled
    with a small filter (16 kHz : rate needs terms up to 1000, as 16000:44100 = 160:441 has)."""
    limits = {"rate": (4000, 192000), "width": (1, 4), "channels": (1, 8)}
    problems = []
    for key, (low, high) in limits.items():
        value = data.get(key)
        if type(value) is not int or not low <= value <= high:
            problems.append(f"'{key}'")
    if not problems and max(data["rate"], 16000) // math.gcd(data["rate"], 16000) > 1000:
        problems.append("Hz")
    return problems


@FUZZ
@given(
    formats=st.lists(
        st.fixed_dictionaries(
            {},
            optional={"rate": format_values, "width": format_values, "channels": format_values},
        ),
        min_size=1,
        max_size=3,
    ),
    kind=st.sampled_from(["audio-start", "audio-chunk"]),
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_audio_in_any_claimed_format(
    service: Service, formats: list[dict[str, Any]], kind: str, sizes: list[int], seed: int
) -> None:
    """Rates, widths and channel counts of every type and size, payloads of any byte count for them; a new
    format mid-stream starts a new stream."""
    rng = np.random.default_rng(seed)
    data = b""
    problems = None
    for claimed in formats:
        data += frame({"type": kind, "data": claimed})
        for size in sizes:
            payload = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            data += frame({"type": "audio-chunk", "data": claimed, "payload_length": size}, payload)
        found = _format_problems(claimed)
        if found:
            problems = found
            break
    result = exchange(service, data + events_bytes(AudioStop().event()))
    check_answers(service, result, problems)
    if problems is None:
        assert [a.type for a in result.answers][-2:] in (["not-detected", "pong"], ["detection", "pong"])
    assert_healthy(service)


timestamps = st.one_of(
    st.sampled_from(
        [0, -1, 2**62 - 1, 2**62, 2**63, int("9" * 4300), -int("9" * 4300)]
    ),  # JSON allows 4300 digits
    st.integers(-(2**80), 2**80),
    json_values,
)


names_values = st.none() | st.lists(st.sampled_from(["happy", "short", "nope", ""]) | any_text, max_size=4)
MONO16 = {"rate": 16000, "width": 2, "channels": 1}
menu = st.one_of(
    st.builds(lambda: Describe().event()),
    st.builds(lambda text: Event("ping", {"text": text}), any_text | json_values),
    st.builds(lambda names: Event("detect", {"names": names}), names_values | json_values),
    st.builds(lambda: AudioStart(16000, 2, 1).event()),
    st.builds(
        lambda n, stamp: Event("audio-chunk", {**MONO16, "timestamp": stamp}, b"\x01" * n),
        st.integers(0, 700),
        json_values,
    ),
    st.builds(lambda n: AudioChunk(8000, 1, 2, b"\x80" * n).event(), st.integers(0, 300)),
    st.builds(lambda: AudioStop().event()),
    st.builds(  # AudioStart(timestamp) and the 4 s holding the keyword: a Detection whose time is computed
        lambda stamp: Event("keyword-audio", {"timestamp": stamp}),
        timestamps,
    ),
    st.builds(
        Event,
        st.sampled_from(["info", "detection", "error", "x"]),
        st.dictionaries(any_text, json_values, max_size=3),
    ),
)


def _detect_problem(names: Any) -> list[str] | None:
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return ["'names'"]
    if names and not [n for n in names if n == "happy"]:
        return ["no active wake word"]
    return None


@FUZZ
@given(events=st.lists(menu, max_size=12), describes=st.integers(0, 150))
def test_events_in_any_order(service: Service, events: list[Event], describes: int) -> None:
    """Chunks before AudioStart, stops without a start, detects with odd names, server-side events sent by a
    client, a flood of Describes: answered in order, or one Error for the first unusable event."""
    problems = None
    for event in events:
        if event.type == "detect":
            problems = _detect_problem(event.data.get("names"))
            if problems:
                break
    sent = []
    for event in events:
        if event.type != "keyword-audio":
            sent.append(event)
            continue
        sent.append(Event("audio-start", {**MONO16, "timestamp": event.data["timestamp"]}))
        sent += [
            AudioChunk(16000, 2, 1, service.pcm[i : i + 6400]).event()
            for i in range(0, len(service.pcm), 6400)
        ]
        sent.append(AudioStop().event())
    result = exchange(service, events_bytes(*sent, *[Describe().event()] * describes))
    check_answers(service, result, problems)
    if problems is None:
        assert Pong.is_type(result.answers[-1].type)
        infos = [a for a in result.answers if Info.is_type(a.type)]
        assert len(infos) == describes + sum(Describe.is_type(e.type) for e in events)
    assert_healthy(service)


@FUZZ
@given(start=timestamps, chunk=st.none() | timestamps)
def test_timestamps_of_any_size_or_type(service: Service, start: Any, chunk: Any) -> None:
    """The keyword's Detection carries the chunk's timestamp, or the stream start's plus its offset, whatever
    the client sent as either."""
    data = frame({"type": "audio-start", "data": {**MONO16, "timestamp": start}})
    for offset in range(0, len(service.pcm), 6400):
        stamp = {} if chunk is None else {"timestamp": chunk}
        data += events_bytes(Event("audio-chunk", MONO16 | stamp, service.pcm[offset : offset + 6400]))
    result = exchange(service, data + events_bytes(AudioStop().event()))
    check_answers(service, result, None)
    assert [a.type for a in result.answers] == ["detection", "pong"], result.answers
    assert type(result.answers[0].data["timestamp"]) is int
    assert_healthy(service)


@FUZZ
@given(cut=st.integers(0, 10**6), ending=st.sampled_from(["fin", "reset"]))
def test_disconnect_anywhere(service: Service, cut: int, ending: str) -> None:
    """A well-formed stream cut at any byte (mid-header, mid-data, mid-payload): no warning, nothing lost."""
    whole = events_bytes(
        Detect(names=["happy"]).event(),
        AudioStart(16000, 2, 1).event(),
        *[AudioChunk(16000, 2, 1, service.pcm[i : i + 3201]).event() for i in range(0, 16000, 3201)],
    )
    result = exchange(service, whole[: cut % (len(whole) + 1)], ending)
    check_answers(service, result, None)
    assert not [r for r in service.log.records if f":{result.client}:" in r.getMessage()]
    assert_healthy(service)


# ------------------------------------------------------------------------------------ the parts, directly


async def _read_all(raw: bytes) -> list[Event]:
    reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES)
    reader.feed_data(raw)
    reader.feed_eof()
    events = []
    for _ in range(len(raw) + 1):  # every event uses at least one byte (its newline)
        event = await server_read_event(reader)
        if event is None:
            return events
        events.append(event)
    raise AssertionError("read_event never reached the end of the input")


@UNIT
@given(
    raw=st.binary(max_size=300)
    | st.lists(
        st.builds(
            frame,
            json_values
            | st.dictionaries(
                st.sampled_from(["type", "data", "payload_length", "data_length"]), json_values
            ),
            st.binary(max_size=20),
        ),
        max_size=4,
    ).map(b"".join)
)
def test_read_event_gives_events_or_one_protocol_error(raw: bytes) -> None:
    try:
        events = asyncio.run(_read_all(raw))
    except ProtocolError as error:
        message = str(error)
        assert message and "\n" not in message and message.encode("utf-8"), message
        return
    for event in events:
        assert isinstance(event.type, str) and event.type and isinstance(event.data, dict)
        assert event.payload is None or len(event.payload) <= MAX_BODY_BYTES
        json.dumps(event.data)


@UNIT
@given(data=st.fixed_dictionaries({}, optional=dict.fromkeys(("rate", "width", "channels"), format_values)))
def test_pcm_format_parse_takes_what_the_converter_can_and_names_the_rest(data: dict[str, Any]) -> None:
    problems = _format_problems(data)
    try:
        pcm = PcmFormat.parse(data, "audio-start")
    except ProtocolError as error:
        message = str(error)
        assert problems and any(p in message for p in problems), (problems, message)
        assert "\n" not in message and message.startswith("audio-start: ")
        return
    assert not problems, problems
    assert (pcm.rate, pcm.width, pcm.channels) == (data["rate"], data["width"], data["channels"])


@UNIT
@given(
    rate=st.sampled_from([8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 96000, 192000]),
    width=st.integers(1, 4),
    channels=st.integers(1, 8),
    raw=st.binary(max_size=4000),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_pcm_converter_is_the_whole_signal_however_it_is_cut(
    rate: int, width: int, channels: int, raw: bytes, cuts: list[int]
) -> None:
    """Chunks that split samples and frames anywhere give the samples of the whole, decoded and resampled."""
    converter = PcmConverter(PcmFormat(rate, width, channels))
    bounds = sorted({0, len(raw), *(c for c in cuts if c < len(raw))})
    pieces = [converter.push(raw[a:b]) for a, b in itertools.pairwise(bounds)]
    out = np.concatenate([*pieces, converter.flush()])
    usable = len(raw) - len(raw) % (width * channels)
    whole = decode_pcm(raw[:usable], width).reshape(-1, channels).mean(axis=1)
    expected = resample(whole, rate, 16000) if rate != 16000 else whole
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=2e-6)
    assert np.all(np.isfinite(out))


# ------------------------------------------------------------------------------ regressions of the bugs found


def test_a_keyword_vector_of_the_wrong_length_is_inactive_not_scored(service: Service) -> None:
    """'short' has this model's sha but 29 numbers for a 32-d model: it must not reach the detector, where it
    would fail the scoring of every window (the catalogue checks the length as the daemon does)."""
    result = exchange(service, events_bytes(Describe().event(), Detect(names=["short"]).event()))
    info = Info.from_event(result.answers[0])
    assert {m.name: m.installed for m in info.wake[0].models} == {"happy": True, "short": False}
    error = check_answers(service, result, ["no active wake word named 'short'"])
    assert error is not None and error.code == "unknown-wake-word"
    assert_healthy(service)  # all keywords (names=None): 'happy' is detected, 'short' never scored


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # a client's string quoted in an error: a line break split the log line and the Error text in two, a
        # lone surrogate made writing the Error fail (UnicodeEncodeError, a traceback, no Error sent)
        (frame({"type": "a\nb", "data": 5}), "a\\nb: 'data' must be a JSON object"),
        (frame({"type": "\ud800", "data": 5}), "\\ud800: 'data' must be a JSON object"),
        (
            frame({"type": "x\ud800", "data_length": 2}, b"[]"),
            "x\\ud800 data must be a JSON object, got list",
        ),
        (frame({"type": "t" * 5000, "data": 5}), "t" * 40 + ": 'data' must be a JSON object"),
    ],
)
def test_client_strings_in_an_error_are_escaped_and_cut(service: Service, data: bytes, expected: str) -> None:
    error = check_answers(service, exchange(service, data), [expected])
    assert error is not None and error.text == expected
    assert_healthy(service)


def test_a_ping_text_with_a_lone_surrogate_is_answered(service: Service) -> None:
    """Echoing it in the Pong raised UnicodeEncodeError: a traceback and the connection closed."""
    result = exchange(service, frame({"type": "ping", "data": {"text": "a\ud800b"}}))
    assert [(a.type, a.data.get("text")) for a in result.answers] == [("pong", "a\\ud800b"), ("pong", "end")]
    assert_healthy(service)


def test_a_timestamp_of_4300_digits_does_not_break_the_detection(service: Service) -> None:
    """JSON allows it; the Detection's time (start + offset) had 4301 digits, which Python refuses to print:
    ValueError while writing the Detection, a traceback, the connection closed, the keyword never reported."""
    start = frame({"type": "audio-start", "data": {**MONO16, "timestamp": int("9" * 4300)}})
    chunks = [
        AudioChunk(16000, 2, 1, service.pcm[i : i + 6400]).event() for i in range(0, len(service.pcm), 6400)
    ]
    result = exchange(service, start + events_bytes(*chunks, AudioStop().event()))
    assert [a.type for a in result.answers] == ["detection", "pong"]
    plain = exchange(
        service, frame({"type": "audio-start", "data": MONO16}) + events_bytes(*chunks, AudioStop().event())
    )
    assert plain.answers[0].data["timestamp"] > 0  # as if none was given: from the stream's start
    assert result.answers[0].data["timestamp"] == plain.answers[0].data["timestamp"]
    assert_healthy(service)
