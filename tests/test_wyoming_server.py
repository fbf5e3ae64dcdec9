"""The Wyoming wake-word service in-process: a real socket, the real `wyoming` client classes, several clients
at once, audio in every rate/width/channel count, keywords changing while it runs, and hostile input."""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient, AsyncUnixClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.wake import Detect, Detection, NotDetected

from edge.audio import load_audio, resample
from edge.commands import enroll_from_audio
from edge.config import DetectorConfig, WyomingConfig
from edge.model import Encoder, load_model
from edge.templates import TemplateStore
from edge.wyoming_server import WakeServer
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401

SLACK_S = 1.5  # a detection comes at most this long after the keyword ends (window end, smoothing)


def encode_pcm(audio: np.ndarray, rate: int, width: int, channels: int) -> bytes:
    """16 kHz float audio as raw PCM of another format (what a client would send)."""
    x = resample(audio, 16000, rate) if rate != 16000 else audio
    x = np.clip(np.repeat(x[:, None], channels, axis=1), -1.0, 1.0 - 2**-23)
    if width == 1:
        return np.round(x * 128 + 128).clip(0, 255).astype(np.uint8).tobytes()
    if width == 2:
        return np.round(x * 32768).clip(-32768, 32767).astype("<i2").tobytes()
    ints = np.round(x * 2 ** (8 * width - 1)).astype(np.int64)
    if width == 4:
        return ints.astype("<i4").tobytes()
    return (ints.reshape(-1, 1) & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


@pytest.fixture(scope="module")
def encoder(random_model_path: Path) -> Encoder:
    return load_model(random_model_path)


@pytest.fixture
def state_dir(tmp_path: Path, encoder: Encoder, keyword_stream: KeywordStream) -> Path:
    """A state directory with 'happy' enrolled from the stream's keyword clip."""
    store = TemplateStore(tmp_path / "state")
    enroll_from_audio(
        "happy", [("clip", load_audio(keyword_stream.keyword_clip))], encoder, store, check=False
    )
    return tmp_path / "state"


@contextlib.asynccontextmanager
async def serving(
    encoder: Encoder, state_dir: Path, events: list[dict[str, Any]] | None = None, **settings: Any
) -> AsyncIterator[int]:
    server = WakeServer(
        encoder,
        TemplateStore(state_dir),
        DetectorConfig(threshold=0.7),
        WyomingConfig(uri="tcp://127.0.0.1:0", **settings),
        reload_s=0.2,
        on_event=events.append if events is not None else None,
    )
    uri = await server.start()
    try:
        yield int(uri.rsplit(":", 1)[1])
    finally:
        await server.close()


async def read_until_pong(client: AsyncTcpClient) -> list[Event]:
    """Every event up to the Pong that answers our Ping: the server handles events in order, so by then it
    has answered all the audio sent before."""
    events = []
    while True:
        event = await asyncio.wait_for(client.read_event(), 60)
        if event is None or Pong.is_type(event.type):
            return events
        events.append(event)


async def stream(
    port: int,
    pcm: bytes,
    rate: int = 16000,
    width: int = 2,
    channels: int = 1,
    chunk_ms: int = 30,
    names: list[str] | None = None,
) -> list[Event]:
    """The Home Assistant sequence (Detect, AudioStart, AudioChunk..., AudioStop), then a Ping."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Detect(names=names).event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        step = rate * chunk_ms // 1000 * width * channels
        for offset in range(0, len(pcm), step):
            chunk = AudioChunk(rate, width, channels, pcm[offset : offset + step], timestamp=None)
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        await client.write_event(Ping(text="done").event())
        return await read_until_pong(client)


def detection_times(events: list[Event]) -> list[float]:
    return [Detection.from_event(e).timestamp / 1000 for e in events if Detection.is_type(e.type)]  # type: ignore[operator]


def assert_keyword_times(times: list[float], stream_info: KeywordStream) -> None:
    assert len(times) == len(stream_info.keyword_times), times
    for (start, end), t in zip(stream_info.keyword_times, times, strict=True):
        assert start < t <= end + SLACK_S, (start, end, t)


def test_describe_lists_the_enrolled_keywords_as_wake_words(state_dir: Path, encoder: Encoder) -> None:
    keywords = state_dir / "keywords"
    foreign = json.loads((keywords / "happy.json").read_text()) | {
        "name": "old_word",
        "model_sha256": "f" * 64,
    }
    (keywords / "old_word.json").write_text(json.dumps(foreign))

    async def scenario() -> Info:
        async with serving(encoder, state_dir) as port, AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event is not None and Info.is_type(event.type)
            return Info.from_event(event)

    (program,) = asyncio.run(scenario()).wake
    assert program.name == "udkws" and program.installed
    models = {m.name: m for m in program.models}
    assert set(models) == {"happy", "old_word"}
    assert models["happy"].installed and models["happy"].phrase == "happy"
    assert not models["old_word"].installed and "re-enroll" in (models["old_word"].description or "")
    assert models["old_word"].phrase == "old word"


def test_several_clients_at_once_each_with_its_own_stream_and_format(
    state_dir: Path, encoder: Encoder, keyword_stream: KeywordStream
) -> None:
    audio = load_audio(keyword_stream.path)
    silence = np.zeros(16000 * 4, dtype=np.float32)
    events: list[dict[str, Any]] = []

    async def scenario() -> list[list[Event]]:
        async with serving(encoder, state_dir, events) as port:
            return await asyncio.gather(
                stream(port, encode_pcm(audio, 16000, 2, 1), names=["happy"], chunk_ms=20),
                stream(port, encode_pcm(audio, 48000, 4, 2), 48000, 4, 2, chunk_ms=100),
                stream(port, encode_pcm(audio, 22050, 3, 1), 22050, 3, 1, chunk_ms=50),
                stream(port, encode_pcm(silence, 16000, 2, 1)),
            )

    plain, stereo48, mono22, quiet = asyncio.run(scenario())
    for events_of_client in (plain, stereo48, mono22):
        assert_keyword_times(detection_times(events_of_client), keyword_stream)
        assert not any(NotDetected.is_type(e.type) for e in events_of_client)
    assert [e.type for e in quiet] == ["not-detected"]
    logged = [e for e in events if e["event"] == "wyoming_detection"]
    assert len(logged) == 9 and {e["keyword"] for e in logged} == {"happy"}
    assert len({e["client"] for e in logged}) == 3


@pytest.mark.parametrize(("rate", "width", "channels"), [(8000, 2, 1), (11025, 1, 1), (44100, 2, 2)])
def test_other_formats_arrive_as_the_same_audio(
    state_dir: Path, encoder: Encoder, keyword_stream: KeywordStream, rate: int, width: int, channels: int
) -> None:
    """8 kHz and 8-bit keep less of the signal; the detector's input still holds the keyword where it was."""
    from edge.wyoming_events import PcmConverter, PcmFormat

    audio = load_audio(keyword_stream.path)[: 16000 * 4]
    converter = PcmConverter(PcmFormat(rate, width, channels))
    raw = encode_pcm(audio, rate, width, channels)
    out = np.concatenate(
        [converter.push(raw[i : i + 777]) for i in range(0, len(raw), 777)] + [converter.flush()]
    )
    expected = resample(resample(audio, 16000, rate), rate, 16000) if rate != 16000 else audio
    assert abs(out.shape[0] - audio.shape[0]) <= 1
    n = min(out.shape[0], expected.shape[0])
    tolerance = {1: 2 / 128, 2: 2e-4}[width]
    np.testing.assert_allclose(out[:n], expected[:n], atol=tolerance)


@pytest.mark.parametrize(
    ("rate", "width", "channels"), [(16000, 2, 1), (48000, 4, 2), (22050, 3, 1), (32000, 1, 3)]
)
def test_pcm_converter_equals_decoding_and_resampling_the_whole_signal(
    rate: int, width: int, channels: int
) -> None:
    from edge.audio import decode_pcm
    from edge.wyoming_events import PcmConverter, PcmFormat

    rng = np.random.default_rng(rate + width)
    raw = rng.integers(0, 256, size=rate * width * channels // 2, dtype=np.uint8).tobytes()  # 0.5 s
    converter = PcmConverter(PcmFormat(rate, width, channels))
    cuts = np.sort(rng.integers(0, len(raw), size=40))  # chunks that split sample frames
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    out = np.concatenate([converter.push(p) for p in pieces] + [converter.flush()])
    whole = decode_pcm(raw, width).reshape(-1, channels).mean(axis=1)
    np.testing.assert_allclose(out, resample(whole, rate, 16000), atol=2e-6)


def test_keywords_enrolled_and_removed_while_running_are_picked_up(
    state_dir: Path, encoder: Encoder, keyword_stream: KeywordStream
) -> None:
    store = TemplateStore(state_dir)
    happy = store.get("happy")
    store.remove("happy")
    audio = load_audio(keyword_stream.path)

    async def wake_words(port: int) -> list[str]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event is not None
            return [m.name for m in Info.from_event(event).wake[0].models]

    async def wait_for_words(port: int, expected: list[str]) -> None:
        for _ in range(300):
            if await wake_words(port) == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"wake words never became {expected}")

    async def scenario() -> tuple[list[Event], list[Event]]:
        async with serving(encoder, state_dir) as port:
            assert await wake_words(port) == []
            before = await stream(port, encode_pcm(audio, 16000, 2, 1))  # nothing enrolled: nothing found
            store.add(happy)  # as `kws-edge enroll` does, while the service runs
            await wait_for_words(port, ["happy"])
            after = await stream(port, encode_pcm(audio, 16000, 2, 1))
            store.remove("happy")
            await wait_for_words(port, [])
            return before, after

    before, after = asyncio.run(scenario())
    assert [e.type for e in before] == ["not-detected"]
    assert_keyword_times(detection_times(after), keyword_stream)


def test_a_keyword_enrolled_mid_stream_is_heard_in_that_stream(
    state_dir: Path, encoder: Encoder, keyword_stream: KeywordStream
) -> None:
    store = TemplateStore(state_dir)
    happy = store.get("happy")
    store.remove("happy")
    pcm = encode_pcm(load_audio(keyword_stream.path), 16000, 2, 1)
    half = len(pcm) // 2  # 8 s: after the first keyword (1.5 s), before the second (7.5 s)

    async def scenario() -> list[Event]:
        async with serving(encoder, state_dir) as port, AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            await client.write_event(AudioChunk(16000, 2, 1, pcm[:half]).event())
            await client.write_event(Ping().event())
            first = await read_until_pong(client)
            store.add(happy)
            await asyncio.sleep(0.6)  # three polls
            for offset in range(half, len(pcm), 3200):
                await client.write_event(AudioChunk(16000, 2, 1, pcm[offset : offset + 3200]).event())
            await client.write_event(AudioStop().event())
            await client.write_event(Ping().event())
            return first + await read_until_pong(client)

    times = detection_times(asyncio.run(scenario()))
    assert len(times) == 2 and all(t > 7.5 for t in times), times


def test_detect_with_names_listens_for_those_only(
    state_dir: Path, encoder: Encoder, keyword_stream: KeywordStream
) -> None:
    pcm = encode_pcm(load_audio(keyword_stream.path), 16000, 2, 1)

    async def scenario() -> tuple[list[Event], list[Event]]:
        async with serving(encoder, state_dir) as port:
            unknown = await stream(port, pcm[: 16000 * 2 * 4], names=["nope"])
            empty_list = await stream(port, pcm, names=[])
            return unknown, empty_list

    unknown, empty_list = asyncio.run(scenario())
    assert Error.is_type(unknown[0].type)
    error = Error.from_event(unknown[0])
    assert error.code == "unknown-wake-word" and "'nope'" in error.text and "happy" in error.text
    assert len(unknown) == 1  # then the server closed the connection
    assert_keyword_times(detection_times(empty_list), keyword_stream)


async def raw_exchange(port: int, data: bytes) -> list[Event]:
    """Send bytes as they are, then a ping; the events answered until the pong or the server closing."""
    from edge.wyoming_events import read_event

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data + _line({"type": "ping"}))
    await writer.drain()
    events: list[Event] = []
    while (event := await asyncio.wait_for(read_event(reader), 30)) is not None:
        if Pong.is_type(event.type):
            break
        events.append(event)
    writer.close()
    return events


def _line(header: dict[str, Any]) -> bytes:
    return json.dumps(header).encode() + b"\n"


HOSTILE: list[tuple[bytes, str | None]] = [
    (b"not json\n", "not valid JSON"),
    (b"[1, 2]\n", "must be a JSON object"),
    (b'{"data": {}}\n', "string 'type'"),
    (b"[" * 60000 + b"\n", "not valid JSON"),
    (b"x" * 70000, "longer than 65536"),
    (_line({"type": "audio-chunk", "payload_length": -1}), "payload_length"),
    (_line({"type": "audio-chunk", "payload_length": 1 << 30}), "payload_length"),
    (_line({"type": "audio-chunk", "data_length": "3"}), "data_length"),
    (_line({"type": "describe", "data_length": 4}) + b"[42]", "must be a JSON object"),
    (_line({"type": "audio-start", "data": {"rate": 16001, "width": 2, "channels": 1}}), "16001 Hz"),
    (_line({"type": "audio-start", "data": {"rate": 16000, "width": 7, "channels": 1}}), "'width'"),
    (_line({"type": "audio-chunk", "data": {"rate": "16000", "width": 2, "channels": 1}}), "'rate'"),
    (_line({"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 0}}), "'channels'"),
    (_line({"type": "detect", "data": {"names": "happy"}}), "list of strings"),
    (_line({"type": "detect", "data": [1]}), "'data' must be a JSON object"),
    (_line({"type": "no-such-event"}) + _line({"type": "ping", "data": {"text": 5}}), None),
]


@pytest.mark.parametrize(("data", "message"), HOSTILE)
def test_hostile_input_gets_a_one_line_error_and_the_service_goes_on(
    state_dir: Path, encoder: Encoder, data: bytes, message: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[list[Event], Info]:
        async with serving(encoder, state_dir) as port:
            answered = await raw_exchange(port, data)
            async with AsyncTcpClient("127.0.0.1", port) as client:  # the next client is served as usual
                await client.write_event(Describe().event())
                event = await asyncio.wait_for(client.read_event(), 30)
                assert event is not None
                return answered, Info.from_event(event)

    answered, info = asyncio.run(scenario())
    assert [m.name for m in info.wake[0].models] == ["happy"]
    if message is None:  # an unknown event is ignored; a ping with a strange text still gets its pong
        assert answered == []
        return
    errors = [Error.from_event(e) for e in answered if Error.is_type(e.type)]
    assert len(errors) == 1 and message in errors[0].text, answered
    assert answered[-1].type == "error"  # and then the connection is closed: the ping is never answered
    assert "\n" not in errors[0].text
    assert "Traceback" not in caplog.text and message in caplog.text


def test_more_clients_than_allowed_are_refused_politely(state_dir: Path, encoder: Encoder) -> None:
    async def scenario() -> list[Event]:
        async with (
            serving(encoder, state_dir, max_clients=1) as port,
            AsyncTcpClient("127.0.0.1", port) as first,
        ):
            await first.write_event(Ping().event())
            await read_until_pong(first)  # the first connection is being served
            return await raw_exchange(port, _line({"type": "describe"}))

    (event,) = asyncio.run(scenario())
    assert Error.from_event(event).code == "busy" and "max_clients = 1" in Error.from_event(event).text


async def _stream_live_10ms(client: AsyncClient, pcm: bytes) -> tuple[list[Event], float]:
    """Home Assistant's way: AudioStart, 10 ms chunks at real time, AudioStop, then a Ping."""
    await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index, offset in enumerate(range(0, len(pcm), 320)):
        await client.write_event(
            AudioChunk(16000, 2, 1, pcm[offset : offset + 320], timestamp=index * 10).event()
        )
        await asyncio.sleep(max(0.0, started + (index + 1) * 0.01 - loop.time()))
    await client.write_event(AudioStop().event())
    await client.write_event(Ping().event())
    return await read_until_pong(client), loop.time() - started


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_a_live_client_in_10ms_chunks_is_read_in_bulk_and_heard_in_time(
    transport: str,
    state_dir: Path,
    encoder: Encoder,
    keyword_stream: KeywordStream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Home Assistant's 10 ms chunks at real time: between windows the server reads nothing (one wake-up per
    window instead of ten: on TCP the kernel holds the socket until the window's bytes are in, elsewhere the
    transport pauses), yet it answers each window as its last sample arrives and AudioStop and Ping at once."""
    from asyncio import selector_events

    reads: list[int] = []
    pauses: list[float] = []
    original_feed, original_pause = (
        asyncio.StreamReader.feed_data,
        selector_events._SelectorSocketTransport.pause_reading,
    )

    def counting_feed(self: asyncio.StreamReader, data: bytes) -> None:
        reads.append(len(data))
        original_feed(self, data)

    def counting_pause(self: Any) -> None:
        pauses.append(asyncio.get_running_loop().time())
        original_pause(self)

    monkeypatch.setattr(asyncio.StreamReader, "feed_data", counting_feed)
    monkeypatch.setattr(selector_events._SelectorSocketTransport, "pause_reading", counting_pause)
    pcm = encode_pcm(load_audio(keyword_stream.path)[: 16000 * 4], 16000, 2, 1)  # the first keyword only

    async def scenario() -> tuple[list[Event], float]:
        if transport == "tcp":
            async with serving(encoder, state_dir) as port, AsyncTcpClient("127.0.0.1", port) as client:
                return await _stream_live_10ms(client, pcm)
        path = tmp_path / "wake.sock"
        server = WakeServer(
            encoder,
            TemplateStore(state_dir),
            DetectorConfig(threshold=0.7),
            WyomingConfig(uri=f"unix://{path}"),
        )
        await server.start()
        try:
            async with AsyncUnixClient(str(path)) as client:
                return await _stream_live_10ms(client, pcm)
        finally:
            await server.close()

    events, wall_s = asyncio.run(scenario())
    (stamp,) = [Detection.from_event(e).timestamp for e in events if Detection.is_type(e.type)]
    start, end = keyword_stream.keyword_times[0]
    assert stamp is not None and start < stamp / 1000 <= end + SLACK_S
    chunks = len(pcm) // 320
    if transport == "tcp":
        # 400 chunks; read one by one they would be >= 400 reads. About 25 windows in 4 s, plus the first 1.5 s.
        assert len(reads) < chunks / 5, (len(reads), reads[:40])  # measured: 30
    else:
        assert len(pauses) >= 10, pauses
    assert wall_s < 4.0 * 5  # and did not hold the client back (generous: a loaded machine)


def test_wake_words_get_the_daemons_thresholds(state_dir: Path, encoder: Encoder, tmp_path: Path) -> None:
    """With a cohort beside the model, a wake word's threshold is its false-alarm budget's, as in the daemon."""
    from edge.cohort import Cohort, cohort_path_for
    from edge.config import Config
    from edge.resolver import KeywordResolver
    from edge.wyoming_events import KeywordCatalog

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4000, encoder.embedding_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    model = tmp_path / "model.tflite"
    Cohort.from_float(vectors, [0, 2000], 100, encoder.sha256).save(cohort_path_for(model))
    resolver = KeywordResolver.for_model(Config(), model, encoder.sha256)
    catalog = KeywordCatalog(TemplateStore(state_dir), encoder, resolver)
    catalog.refresh(force=True)
    served = catalog.select(None)[0]
    expected = resolver.resolve_one(TemplateStore(state_dir).get("happy"))
    assert expected.threshold_source == "budget"
    assert served.threshold == expected.template.threshold
    assert (
        0
        < served.negatives.shape[0]
        == expected.template.negatives.shape[0]
        <= Config().detector.hard_negatives
    )
