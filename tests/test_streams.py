"""Live calls: the window-by-window analysis, and streams over real WebSockets.

The first part drives :class:`voicecheck.live.LiveCall` in-process and holds it to
file scoring: the same windows, the same feature values, the same decoding. The second part
runs ``voicecheck serve --workers 2`` on loopback (the shared ``Server`` of the server
tests) with the shipped model and talks to it with the ``websockets`` client library: a
G.711 call at real-time pace and faster, a replay of a Twilio Media Streams session,
dropped connections, bad frames, the per-key limit and the idle timeout. Results are read
back as an operator and a partner would: ``GET /v1/streams/{id}``, ``GET
/v1/analyses/{id}``, ``voicecheck audit export`` and the callback receiver.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import voiced
from test_service_server import HOST, CallbackReceiver, Server, cli, create_key
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voicecheck.analysis import feature_names, level_gain, segment_features
from voicecheck.audio import load_audio
from voicecheck.errors import AudioTooShortError, NoSpeechError
from voicecheck.live import LevelMeter, LiveCall, decode
from voicecheck.scoring import analyze

SR = 8000


def _speech(espeak_speech, seconds: float, *, sr: int = SR) -> np.ndarray:
    y, rate = espeak_speech
    y = soxr.resample(y, rate, sr)
    return np.tile(y, int(np.ceil(seconds * sr / y.size)))[: int(seconds * sr)].astype(np.float32)


def _wav(y: np.ndarray, sr: int, subtype: str) -> tuple[bytes, bytes]:
    """``y`` (n,) or (n, channels) as a WAV file, and its data chunk (the raw samples)."""
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    wav = buf.getvalue()
    at = wav.index(b"data")
    size = int.from_bytes(wav[at + 4 : at + 8], "little")
    return wav, wav[at + 8 : at + 8 + size]


class Recording:
    """A detector that remembers every feature row it scores (for comparing features)."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.rows: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.detector, name)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.rows.append(np.array(X))
        return self.detector.predict_proba(X)


def _stream(call: LiveCall, raw: bytes, *, encoding: str, channels: int, piece_s: float) -> None:
    width = {"mulaw": 1, "alaw": 1, "pcm16": 2}[encoding] * channels
    step = max(width, int(piece_s * call.sample_rate) * width)
    for i in range(0, len(raw), step):
        call.push(decode(raw[i : i + step], encoding).reshape(-1, channels))
    call.finish()


# --- the live analysis against file scoring -------------------------------------------------


@pytest.mark.parametrize("encoding", ["mulaw", "alaw", "pcm16"])
def test_stream_decoding_equals_file_decoding(encoding: str, rng) -> None:
    y = (0.5 * rng.standard_normal(4000)).clip(-1, 1).astype(np.float32)
    subtype = {"mulaw": "ULAW", "alaw": "ALAW", "pcm16": "PCM_16"}[encoding]
    wav, raw = _wav(y, SR, subtype)
    from_file, _ = sf.read(io.BytesIO(wav), dtype="float32")
    assert np.array_equal(decode(raw, encoding), from_file)


def test_level_meter_measures_the_level_as_file_scoring(espeak_speech, rng) -> None:
    y = _speech(espeak_speech, 7.3) * np.float32(0.05)
    meter = LevelMeter()
    for piece in np.array_split(y, 97):
        meter.update(piece)
    assert 20 * np.log10(meter.gain() / level_gain(y)) == pytest.approx(0.0, abs=0.05)
    silent = LevelMeter()
    silent.update(np.zeros(SR, np.float32))
    assert silent.gain() == 1.0


def _names_apart(prefix: str) -> np.ndarray:
    return np.array([n.startswith(prefix) for n in feature_names()])


@pytest.mark.parametrize(
    ("rate", "channels", "encoding", "piece_s", "seconds"),
    [
        (8000, 1, "mulaw", 0.02, 10.0),  # a G.711 call in 20 ms packets
        (8000, 1, "pcm16", 0.537, 11.37),  # odd pieces, a call that ends between windows
        (16000, 2, "pcm16", 0.02, 8.0),  # wideband stereo: resampled as a file is
        (8000, 1, "mulaw", 0.02, 2.2),  # shorter than one window
    ],
)
def test_live_windows_equal_file_windows(
    small_model, espeak_speech, rate, channels, encoding, piece_s, seconds
) -> None:
    speech = _speech(espeak_speech, seconds, sr=rate)
    if channels == 2:
        other = voiced(seconds, sr=rate, f0=120.0, seed=3)[: speech.size]
        y = np.stack([speech, other], axis=1)
    else:
        y = speech
    wav, raw = _wav(y, rate, "ULAW" if encoding == "mulaw" else "PCM_16")
    audio = load_audio(wav)
    expected = [segment_features(audio.samples[c]) for c in range(channels)]

    call = LiveCall(small_model, channels=channels, sample_rate=rate)
    seen = [Recording(small_model) for _ in range(channels)]
    for ch, detector in zip(call.live, seen, strict=True):
        ch.detector = detector  # the rows each channel's windows were scored on
    _stream(call, raw, encoding=encoding, channels=channels, piece_s=piece_s)

    # Features that see the absolute level (the sub-band levels, and through their floors
    # the level deltas and the relative frame energy) carry the level heard so far instead
    # of the whole call's: a fraction of a dB for a call at a steady level. The rest are
    # the file's.
    names = feature_names()
    level = np.array([n.startswith(("subband_", "energy_db_rel")) for n in names])
    for c, seg in enumerate(expected):
        windows = call.live[c].windows
        assert [round(w.start_s, 3) for w in windows] == np.round(seg.start_s, 3).tolist()
        assert [round(w.end_s, 3) for w in windows] == np.round(seg.end_s, 3).tolist()
        assert [w.speech_s >= 0.3 for w in windows] == seg.has_speech.tolist()
        live_rows = np.vstack(seen[c].rows)
        file_rows = seg.X[seg.has_speech]
        assert live_rows.shape == file_rows.shape
        np.testing.assert_allclose(live_rows[:, ~level], file_rows[:, ~level], rtol=1e-3, atol=5e-3)
        assert np.nanmax(np.abs(live_rows[:, level] - file_rows[:, level])) < 0.5


def test_live_analysis_is_the_file_analysis(small_model, espeak_speech) -> None:
    y = _speech(espeak_speech, 9.0)
    wav, raw = _wav(y, SR, "ULAW")
    call = LiveCall(small_model)
    _stream(call, raw, encoding="mulaw", channels=1, piece_s=0.02)
    live = call.analysis({"container": "stream"}).to_dict()
    file = analyze(wav, small_model).to_dict()
    assert live["score"] == pytest.approx(file["score"], abs=0.01)
    assert live["verdict"] == file["verdict"]
    assert [s["start_s"] for s in live["segments"]] == [s["start_s"] for s in file["segments"]]
    assert live["thresholds"] == file["thresholds"] and live["model"] == file["model"]


def test_running_verdict_waits_for_enough_speech(small_model, espeak_speech) -> None:
    call = LiveCall(small_model)
    y = _speech(espeak_speech, 9.0)
    verdicts = []
    for piece in np.array_split(y, 450):
        if call.push(piece[:, None]):
            verdicts.append(call.running()[1])
    assert verdicts[:2] == ["inconclusive", "inconclusive"]
    assert len(verdicts) >= 4


def test_a_long_call_holds_a_few_windows_not_the_call(small_model, espeak_speech) -> None:
    call = LiveCall(small_model)
    speech = _speech(espeak_speech, 6.0)
    held = []
    for _ in range(20):  # two minutes
        for piece in np.array_split(speech, 300):
            call.push(piece[:, None])
        ch = call.live[0]
        held.append((ch._samples.size + sum(p.size for p in ch._pending), ch._frames.shape[1]))
    samples, frames = np.max(held, axis=0)
    assert samples <= 5 * SR  # under 5 s of audio
    assert frames <= 500  # under 5 s of frame features
    assert len(call.live[0].windows) == pytest.approx(120 / 1.5, abs=3)


def test_too_short_and_silent_calls_are_refused_as_files_are(small_model) -> None:
    short = LiveCall(small_model)
    short.push(np.full((2400, 1), 0.1, np.float32))
    short.finish()
    with pytest.raises(AudioTooShortError):
        short.analysis({})
    silent = LiveCall(small_model)
    silent.push(np.zeros((5 * SR, 1), np.float32))
    silent.finish()
    with pytest.raises(NoSpeechError):
        silent.analysis({})


# --- streams over real WebSockets on `voicecheck serve --workers 2` --------------------------


IDLE_S = 3.0  # the shared server's stream_idle_timeout_s
MAX_PER_KEY = 3  # its stream_max_per_key
MAX_MESSAGE_KB = 64  # its stream_max_message_kb
MAX_SECONDS = 20  # its max_sync_duration_s: the longest file, and so the longest stream
WAIT_S = 30.0


@pytest.fixture(scope="module")
def streams_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``voicecheck serve --workers 2`` with the shipped model and small stream limits."""
    srv = Server(
        tmp_path_factory.mktemp("streams") / "data",
        stream_idle_timeout_s=IDLE_S,
        stream_max_per_key=MAX_PER_KEY,
        stream_max_message_kb=MAX_MESSAGE_KB,
        max_sync_duration_s=MAX_SECONDS,
        rate_limit="0",
        retain_audio="true",
    )
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def stream_key(streams_server: Server) -> str:
    return create_key(streams_server.data_dir, "carrier")


@pytest.fixture(scope="module")
def shipped_model():
    from voicecheck.model import load_model

    return load_model()


def _ws_url(server: Server, path: str) -> str:
    return f"ws://{HOST}:{server.port}{path}"


class Client:
    """One raw stream: sends audio in pieces (at a pace, or as fast as it can) and keeps
    every message the server sends, with the time it arrived."""

    def __init__(self, server: Server, key: str | None, query: str = "", **headers: str) -> None:
        self.url = _ws_url(server, f"/v1/streams{query}")
        self.headers = dict(headers)
        if key is not None:
            self.headers["Authorization"] = f"Bearer {key}"
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.started = 0.0

    async def run(
        self,
        pieces: list[bytes],
        *,
        pace_s: float = 0.0,
        stop: bool = True,
        text: str | None = None,
    ) -> Client:
        async with connect(self.url, additional_headers=self.headers, max_size=None) as ws:
            self.started = time.monotonic()
            reader = asyncio.create_task(self._read(ws))
            try:
                for i, piece in enumerate(pieces):
                    await ws.send(piece)
                    if pace_s:
                        due = self.started + (i + 1) * pace_s
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                if text is not None:
                    await ws.send(text)
                if stop:
                    await ws.send(json.dumps({"event": "stop"}))
            except ConnectionClosed:
                pass
            await asyncio.wait_for(reader, WAIT_S)
            self.close_code, self.close_reason = ws.close_code, ws.close_reason or ""
        return self

    async def _read(self, ws) -> None:
        try:
            async for message in ws:
                self.messages.append((time.monotonic() - self.started, json.loads(message)))
        except ConnectionClosed:
            pass

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("event") == name]

    @property
    def result(self) -> dict[str, Any]:
        (result,) = self.events("result")
        return result


def _pieces(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def audit_rows(server: Server) -> list[dict[str, Any]]:
    return json.loads(cli(server.data_dir, "audit", "export", "--format", "json"))


def wait_stream(server: Server, key: str, stream_id: str, done: bool = True) -> dict[str, Any]:
    """``GET /v1/streams/{id}`` until the stream has ended (bounded)."""
    deadline = time.monotonic() + WAIT_S
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = server.get(f"/v1/streams/{stream_id}", key)
        if r.status_code == 200:
            body = r.json()
            if not done or body["status"] != "live":
                return body
        time.sleep(0.2)
    pytest.fail(f"stream {stream_id} still {body.get('status')}:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def g711_stream(streams_server: Server, stream_key: str, g711_call: bytes) -> Client:
    """The 10 s G.711 call streamed in 20 ms packets at real-time pace."""
    raw = g711_call[g711_call.index(b"data") + 8 :]
    client = Client(streams_server, stream_key, "?encoding=mulaw&sample_rate=8000&call_id=c-42")
    return asyncio.run(client.run(_pieces(raw, 160), pace_s=0.02))


@pytest.mark.slow
def test_a_g711_call_at_real_time_pace_is_scored_while_it_goes(
    g711_stream: Client, streams_server: Server, stream_key: str, g711_call: bytes, shipped_model
) -> None:
    client = g711_stream
    assert client.close_code == 1000, client.close_reason
    started = client.events("started")[0]
    assert started["stream_id"].startswith("st_") and started["call_id"] == "c-42"
    file = analyze(g711_call, shipped_model)
    windows = [m for m in client.events("window")]
    assert [(w["start_s"], w["end_s"]) for w in windows] == [
        (s["start_s"], s["end_s"]) for s in file.segments
    ]
    # Live: each window but the one that ends with the call came while the call went on,
    # after its end was heard.
    arrivals = [t for t, m in client.messages if m.get("event") == "window"]
    for t, w in zip(arrivals[:-1], windows[:-1], strict=True):
        assert w["end_s"] <= t < 10.0
    assert all(w["verdict"] == "inconclusive" for w in windows[:2])
    result = client.result
    assert result["score"] == pytest.approx(file.score, abs=0.01)
    assert result["verdict"] == file.verdict and result["interrupted"] is False

    stored = streams_server.get(f"/v1/analyses/{result['analysis_id']}", stream_key).json()
    assert stored["source"] == "stream" and stored["filename"] == "c-42"
    assert stored["score"] == pytest.approx(file.score, abs=0.01)
    for live, recorded in zip(stored["segments"], file.segments, strict=True):
        assert live["start_s"] == recorded["start_s"]
        assert live["score"] == pytest.approx(recorded["score"], abs=0.02)
    assert stored["audio"]["duration_s"] == 10.0 and stored["audio"]["codec"] == "pcm_mulaw"

    state = wait_stream(streams_server, stream_key, started["stream_id"])
    assert state["status"] == "done" and state["analysis_id"] == result["analysis_id"]
    (row,) = [r for r in audit_rows(streams_server) if r["analysis_id"] == result["analysis_id"]]
    assert (row["status"], row["outcome"], row["path"]) == (101, "ok", "/v1/streams")
    assert row["duration_s"] == 10.0 and row["size_bytes"] == 80000
    # retained audio is the call as sent
    kept = Path(streams_server.data_dir, "audio", stored["sha256"][:2], stored["sha256"])
    y, sr = sf.read(kept, dtype="float32")
    assert sr == 8000 and np.array_equal(y, sf.read(io.BytesIO(g711_call), dtype="float32")[0])


@pytest.mark.slow
def test_a_wideband_stereo_call_sent_fast_equals_its_file(
    streams_server: Server, stream_key: str, espeak_speech, shipped_model
) -> None:
    speech = _speech(espeak_speech, 12.0, sr=16000)
    y = np.stack([voiced(12.0, sr=16000, f0=125.0, seed=5), speech], axis=1)
    wav, raw = _wav(y, 16000, "PCM_16")
    client = Client(streams_server, stream_key, "?encoding=pcm16&sample_rate=16000&channels=2")
    asyncio.run(client.run(_pieces(raw, 16000 * 4 // 10)))  # 100 ms messages, no pause
    file = analyze(wav, shipped_model)
    assert client.result["score"] == pytest.approx(file.score, abs=0.01)
    stored = streams_server.get(f"/v1/analyses/{client.result['analysis_id']}", stream_key).json()
    assert [c["channel"] for c in stored["channels"]] == [0, 1]
    for live, recorded in zip(stored["channels"], file.channels, strict=True):
        assert live["score"] == pytest.approx(recorded.score, abs=0.01)
    assert {w["channel"] for w in client.events("window")} == {0, 1}


def _twilio_session(
    inbound: bytes, outbound: bytes, key: str | None, *, stream_sid: str
) -> list[str]:
    """The messages of a Twilio Media Streams session (shapes from Twilio's documentation):
    connected, start, 20 ms media messages of both tracks, a dtmf and a mark, stop."""
    account, call = "AC" + "0" * 32, "CA" + "1" * 32
    params = {"caller": "+15550100"} | ({"api_key": key} if key else {})
    messages = [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": account,
                "streamSid": stream_sid,
                "callSid": call,
                "tracks": ["inbound", "outbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": params,
            },
            "streamSid": stream_sid,
        },
    ]
    seq = 2
    for chunk, at in enumerate(range(0, len(inbound), 160), start=1):
        for track, data in (("inbound", inbound), ("outbound", outbound)):
            messages.append(
                {
                    "event": "media",
                    "sequenceNumber": str(seq),
                    "media": {
                        "track": track,
                        "chunk": str(chunk),
                        "timestamp": str(at // 8),
                        "payload": base64.b64encode(data[at : at + 160]).decode(),
                    },
                    "streamSid": stream_sid,
                }
            )
            seq += 1
        if chunk == 50:
            messages.append(
                {
                    "event": "dtmf",
                    "streamSid": stream_sid,
                    "sequenceNumber": str(seq),
                    "dtmf": {"track": "inbound_track", "digit": "1"},
                }
            )
            messages.append(
                {
                    "event": "mark",
                    "sequenceNumber": str(seq + 1),
                    "streamSid": stream_sid,
                    "mark": {"name": "greeting"},
                }
            )
            seq += 2
    messages.append(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "stop": {"accountSid": account, "callSid": call},
            "streamSid": stream_sid,
        }
    )
    return [json.dumps(m) for m in messages]


async def _replay(url: str, messages: list[str], *, pace_s: float = 0.0) -> tuple[int, str]:
    async with connect(url) as ws:
        started = time.monotonic()
        for i, m in enumerate(messages):
            await ws.send(m)
            if pace_s and i % 2 == 1:
                await asyncio.sleep(max(0.0, started + (i // 2) * pace_s - time.monotonic()))
        try:
            await asyncio.wait_for(ws.wait_closed(), WAIT_S)
        except TimeoutError:
            pass
        return ws.close_code, ws.close_reason


@pytest.mark.slow
def test_a_twilio_media_streams_session_is_scored_and_called_back(
    streams_server: Server, espeak_speech, shipped_model
) -> None:
    caller = _speech(espeak_speech, 9.0)
    agent = voiced(9.0, sr=SR, f0=180.0, seed=11)
    wav, raw = _wav(np.stack([caller, agent], axis=1), SR, "ULAW")
    codes = np.frombuffer(raw, np.uint8).reshape(-1, 2)
    inbound, outbound = codes[:, 0].tobytes(), codes[:, 1].tobytes()
    sid = "MZ" + "a" * 32
    with CallbackReceiver() as receiver:
        key = (
            cli(streams_server.data_dir, "keys", "create", "twilio", "--callback-url", receiver.url)
            .strip()
            .splitlines()[-1]
        )
        code, reason = asyncio.run(
            _replay(
                _ws_url(streams_server, "/v1/streams/twilio"),
                _twilio_session(inbound, outbound, key, stream_sid=sid),
            )
        )
        assert code == 1000, reason
        state = wait_stream(streams_server, key, sid)
        calls = [json.loads(c["body"]) for c in receiver.wait(1)]
        deadline = time.monotonic() + WAIT_S
        while not any(c["event"] == "result" for c in calls) and time.monotonic() < deadline:
            time.sleep(0.1)
            calls = [json.loads(c["body"]) for c in receiver.wait(0, timeout_s=0)]
    file = analyze(wav, shipped_model)
    assert state["status"] == "done" and state["stream_sid"] == sid
    assert state["call_id"] == "CA" + "1" * 32
    assert [c["heard_s"] for c in state["channels"]] == [9.0, 9.0]
    stored = streams_server.get(state["analysis_url"], key).json()
    assert stored["score"] == pytest.approx(file.score, abs=0.01)
    for live, recorded in zip(stored["channels"], file.channels, strict=True):
        assert live["score"] == pytest.approx(recorded.score, abs=0.01)
    events = [c["event"] for c in calls]
    assert events[-1] == "result" and set(events) <= {"verdict", "result"}
    assert calls[-1]["analysis_id"] == state["analysis_id"] and calls[-1]["stream_sid"] == sid
    for c in calls[:-1]:
        assert c["verdict"] in ("likely_cloned", "likely_human")


@pytest.mark.slow
def test_twilio_without_a_valid_key_is_closed_and_audited(streams_server: Server) -> None:
    silence = b"\xff" * 1600
    for key, words in ((None, "api_key"), ("vck_000000000000_" + "x" * 43, "not valid")):
        code, reason = asyncio.run(
            _replay(
                _ws_url(streams_server, "/v1/streams/twilio"),
                _twilio_session(silence, silence, key, stream_sid="MZ" + "b" * 32),
            )
        )
        assert code == 1008 and words in reason
    rows = [r for r in audit_rows(streams_server) if r["path"] == "/v1/streams/twilio"]
    assert [r["outcome"] for r in rows[-2:]] == ["unauthorized", "unauthorized"]


@pytest.mark.slow
def test_a_dropped_connection_keeps_what_was_heard(
    streams_server: Server, stream_key: str, g711_call: bytes
) -> None:
    raw = g711_call[g711_call.index(b"data") + 8 :][: 6 * SR]
    url = _ws_url(streams_server, "/v1/streams")

    async def drop() -> str:
        headers = {"Authorization": f"Bearer {stream_key}"}
        async with connect(url, additional_headers=headers) as ws:
            stream_id = json.loads(await ws.recv())["stream_id"]
            for piece in _pieces(raw, 160):
                await ws.send(piece)
            # once the server has heard it all, the connection drops: no stop, no close frame
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                state = await asyncio.to_thread(
                    wait_stream, streams_server, stream_key, stream_id, False
                )
                if state["heard_s"] == 6.0:
                    break
                await asyncio.sleep(0.2)
            ws.transport.abort()
        return stream_id

    stream_id = asyncio.run(drop())
    state = wait_stream(streams_server, stream_key, stream_id)
    assert state["status"] == "interrupted" and state["heard_s"] == 6.0
    stored = streams_server.get(state["analysis_url"], stream_key).json()
    assert stored["stream"]["interrupted"] is True and stored["stream"]["ended_by"] == "dropped"
    assert stored["audio"]["duration_s"] == 6.0
    (row,) = [r for r in audit_rows(streams_server) if r["analysis_id"] == state["analysis_id"]]
    assert row["outcome"] == "interrupted" and row["duration_s"] == 6.0


BAD_FRAMES = {
    "text that is not JSON": ("?encoding=mulaw", b"", "hello", 1003, "JSON control message"),
    "an unknown control message": ("?encoding=mulaw", b"", '{"event":"pause"}', 1003, "pause"),
    "pcm16 ending inside a sample": ("?encoding=pcm16", b"\x00\x01\x02", None, 1007, "sample"),
    "a message over the size limit": (
        "?encoding=mulaw",
        b"\xff" * (MAX_MESSAGE_KB * 1024 + 1),
        None,
        1009,
        "exceeds limit",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frames_close_the_stream_with_a_reason_and_keep_the_audio(
    case: str, streams_server: Server, stream_key: str, g711_call: bytes
) -> None:
    query, bad, text, code, words = BAD_FRAMES[case]
    good = g711_call[g711_call.index(b"data") + 8 :][: 4 * SR]
    if query.endswith("pcm16"):
        good = (decode(good, "mulaw") * 32767).astype("<i2").tobytes()
    pieces = _pieces(good, 320) + ([bad] if bad else [])
    client = Client(streams_server, stream_key, query)
    asyncio.run(client.run(pieces, text=text, stop=False))
    assert client.close_code == code and words in client.close_reason
    state = wait_stream(streams_server, stream_key, client.events("started")[0]["stream_id"])
    assert state["status"] == "interrupted" and state["close_code"] == code
    stored = streams_server.get(state["analysis_url"], stream_key).json()
    assert stored["audio"]["duration_s"] == pytest.approx(4.0)
    assert stored["stream"]["close_code"] == code
    if code != 1009:  # the protocol itself closes on an oversize message, before any result
        assert client.result["interrupted"] is True
        assert client.result["analysis_id"] == state["analysis_id"]


@pytest.mark.slow
def test_a_stream_ends_at_the_length_limit_with_what_fits_stored(
    streams_server: Server, stream_key: str, espeak_speech
) -> None:
    _, raw = _wav(_speech(espeak_speech, MAX_SECONDS + 5.0), SR, "ULAW")
    client = Client(streams_server, stream_key)
    asyncio.run(client.run(_pieces(raw, 4000), stop=False))
    assert client.close_code == 1008 and f"{MAX_SECONDS} s of audio" in client.close_reason
    assert client.result["duration_s"] == MAX_SECONDS and client.result["interrupted"] is True
    stored = streams_server.get(f"/v1/analyses/{client.result['analysis_id']}", stream_key).json()
    assert stored["audio"]["duration_s"] == MAX_SECONDS


@pytest.mark.slow
def test_refusals_before_the_upgrade_are_problems(streams_server: Server, stream_key: str) -> None:
    r = streams_server.get("/v1/streams", stream_key)
    assert r.status_code == 426 and r.headers["Upgrade"] == "websocket"
    assert r.json()["code"] == "upgrade_required"
    with pytest.raises(InvalidStatus) as info:
        asyncio.run(Client(streams_server, None).run([]))
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        asyncio.run(Client(streams_server, stream_key, "?encoding=opus").run([]))
    assert info.value.response.status_code == 400
    assert b"encoding" in info.value.response.body


@pytest.mark.slow
def test_the_key_may_come_in_the_query_and_is_never_logged(
    streams_server: Server, stream_key: str, g711_call: bytes
) -> None:
    raw = g711_call[g711_call.index(b"data") + 8 :][: 2 * SR]
    client = Client(streams_server, None, f"?encoding=mulaw&api_key={stream_key}")
    asyncio.run(client.run(_pieces(raw, 800)))
    assert client.close_code == 1000 and client.result["analysis_id"]
    secret = stream_key.rsplit("_", 1)[1]
    assert secret not in streams_server.log.read_text(errors="replace")
    assert secret not in json.dumps(audit_rows(streams_server))


@pytest.mark.slow
def test_a_key_holds_a_limited_number_of_streams_and_idle_ones_are_closed(
    streams_server: Server, g711_call: bytes
) -> None:
    key = create_key(streams_server.data_dir, "limited")
    raw = g711_call[g711_call.index(b"data") + 8 :][: 2 * SR]

    async def scenario() -> list[Client]:
        # MAX_PER_KEY streams send a little and go quiet; one more is refused meanwhile.
        quiet = [Client(streams_server, key) for _ in range(MAX_PER_KEY)]
        tasks = [asyncio.create_task(c.run(_pieces(raw, 800), stop=False)) for c in quiet]
        await asyncio.sleep(1.0)
        extra = await Client(streams_server, key).run([], stop=False)
        await asyncio.gather(*tasks)
        return [*quiet, extra]

    *quiet, extra = asyncio.run(scenario())
    assert extra.close_code == 1008 and "streams open" in extra.close_reason
    assert extra.result["error"]["code"] == "too_many_streams"
    for c in quiet:  # closed by the idle timeout, what they sent stored
        assert c.close_code == 1008 and "no message" in c.close_reason
        assert c.result["interrupted"] is True and c.result["analysis_id"]
    rows = [r for r in audit_rows(streams_server) if r["key_name"] == "limited"]
    assert sorted(r["outcome"] for r in rows) == ["interrupted"] * MAX_PER_KEY + [
        "too_many_streams"
    ]


@pytest.mark.slow
def test_streams_at_once_leave_the_workers_free_for_uploads(
    streams_server: Server, stream_key: str, espeak_speech, g711_call: bytes, shipped_model
) -> None:
    calls = [_wav(voiced(6.0, sr=SR, f0=f0, seed=int(f0)), SR, "ULAW") for f0 in (110.0, 210.0)]
    calls.append(_wav(_speech(espeak_speech, 6.0), SR, "ULAW"))
    answers: list[int] = []

    async def together() -> list[Client]:
        clients = [Client(streams_server, stream_key) for _ in calls]
        runs = [
            c.run(_pieces(raw, 160), pace_s=0.01)
            for c, (_, raw) in zip(clients, calls, strict=True)
        ]

        async def upload() -> None:  # both sync workers still answer HTTP meanwhile
            await asyncio.sleep(1.0)
            for _ in range(4):
                r = await asyncio.to_thread(
                    streams_server.post,
                    "/v1/analyze",
                    stream_key,
                    data=g711_call,
                    headers={"Content-Type": "audio/wav"},
                )
                answers.append(r.status_code)

        *done, _ = await asyncio.gather(*runs, upload())
        return done

    clients = asyncio.run(together())
    assert answers == [200] * 4
    for client, (wav, _) in zip(clients, calls, strict=True):
        assert client.close_code == 1000
        assert client.result["score"] == pytest.approx(analyze(wav, shipped_model).score, abs=0.01)
    ids = {c.result["analysis_id"] for c in clients}
    rows = [r for r in audit_rows(streams_server) if r["analysis_id"] in ids]
    assert len(rows) == len(calls) and all(r["outcome"] == "ok" for r in rows)


@pytest.mark.slow
def test_a_killed_worker_and_a_stopping_server_lose_no_stream(
    tmp_path: Path, g711_call: bytes
) -> None:
    import os
    import signal
    import sqlite3

    server = Server(tmp_path / "data", rate_limit="0").start()
    try:
        key = create_key(server.data_dir, "carrier")
        raw = g711_call[g711_call.index(b"data") + 8 :]

        async def until_killed() -> Client:
            client = Client(server, key)
            task = asyncio.create_task(client.run(_pieces(raw, 160) * 3, pace_s=0.02))
            await asyncio.sleep(4.0)
            (row,) = [
                r
                for r in await asyncio.to_thread(audit_rows, server)
                if r["outcome"] == "received" and r["path"] == "/v1/streams"
            ]
            os.kill(int(row["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
            await asyncio.wait_for(task, WAIT_S)
            return client

        killed = asyncio.run(until_killed())
        assert killed.close_code is None or killed.close_code == 1006  # no close frame
        stream_id = killed.events("started")[0]["stream_id"]
        assert wait_stream(server, key, stream_id)["status"] == "lost"

        async def until_stopped() -> Client:
            client = Client(server, key)
            task = asyncio.create_task(client.run(_pieces(raw, 160) * 3, pace_s=0.02))
            await asyncio.sleep(4.0)
            await asyncio.to_thread(server.stop)
            await asyncio.wait_for(task, WAIT_S)
            return client

        stopped = asyncio.run(until_stopped())
    finally:
        server.stop()
    assert stopped.close_code == 1001 and "stopping" in stopped.close_reason
    assert stopped.result["interrupted"] is True and stopped.result["analysis_id"]
    rows = {r["request_id"]: r for r in audit_rows(server)}
    outcomes = sorted(r["outcome"] for r in rows.values() if r["path"] == "/v1/streams")
    assert outcomes == ["interrupted", "interrupted"]
    with sqlite3.connect(server.data_dir / "voicecheck.db") as db:
        status = dict(db.execute("select id, status from streams").fetchall())
        stored = db.execute(
            "select count(*) from analyses where id = ?", (stopped.result["analysis_id"],)
        ).fetchone()[0]
    assert status[stream_id] == "lost"
    assert status[stopped.events("started")[0]["stream_id"]] == "interrupted"
    assert stored == 1
