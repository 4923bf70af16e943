"""Live calls over WebSocket: ``/v1/streams`` (raw audio) and ``/v1/streams/twilio``.

A stream is scored while the call goes on (:mod:`voicecheck.live`: the windows,
features and model of file scoring) and, when it ends, stored as an analysis like an upload
(``GET /v1/analyses/{id}``, its audit row, retained audio, a callback), with
``source: "stream"``.

**Serving.** The upgrade request is an ordinary Flask request in a gunicorn worker: it is
authenticated, counted and audited (a write-ahead ``received`` row) like every ``/v1``
request, then answered ``101 Switching Protocols`` and its connection is handed to the
worker process's stream loop (:class:`StreamHub`: one thread running an asyncio event loop
that holds every WebSocket of the process). The request thread is free again at once, so
a ``sync`` worker still answers one HTTP request at a time and keeps ``--timeout``, and
hundreds of open, mostly idle sockets cost a file descriptor and about 1 MB each (most
of it the frame features of the last 4.5 s). The WebSocket protocol (RFC 6455: framing,
masking, ping, close handshake, size limit) is the Sans-I/O protocol of ``websockets``.

**Bounds.** At most ``stream_max_per_key`` streams per key at once (more: close code
1008), ``max_sync_duration_s`` of audio (then 1008), ``stream_idle_timeout_s`` without a
message (1008), messages of at most ``stream_max_message_kb`` (1009); a text message that
is not a control message (1003) and audio that does not fit the declared encoding (1007)
close the stream too, each with a reason that says what was wrong. Whatever ended a
stream (a fault, a dropped connection, a stopping server), what was heard is scored and
stored, its audit row marked ``interrupted``. If the worker process itself dies, the
master process marks its streams' audit rows ``interrupted`` and their state ``lost``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hashlib
import json
import logging
import os
import secrets
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flask import Blueprint, Response, g, jsonify, request, url_for
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import SEND_EOF
from websockets.server import ServerProtocol

from voicecheck.constants import ANALYSIS_SR_HZ
from voicecheck.errors import AudioError, VoiceCheckError
from voicecheck.live import ENCODINGS, SAMPLE_BYTES, SAMPLE_RATES_HZ, SILENCE_CODE, LiveCall, decode

from . import Service, service
from .api import clean_filename, requires, visible
from .audit import NO_ANSWER, worker_name
from .auth import ApiKey, AuthError, ForbiddenError, RateLimitedError, check_key, check_rate
from .callbacks import check_callback_url, deliver
from .problems import RequestError
from .store import RECEIVED, StoreError, iso, new_id

if TYPE_CHECKING:
    from voicecheck.live import Window

bp = Blueprint("streams", __name__, url_prefix="/v1")

# Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

CLOSE_REASON_BYTES = 123
"""Longest close reason RFC 6455 allows, in bytes of UTF-8."""

MAX_TEXT_BYTES = 64 * 1024
"""Longest text (control) message accepted, in bytes; a Twilio media message is ~0.5 kB."""

LIVE_FLUSH_S = 1.0
"""How often the live state of the process's streams is written to the store."""

HEARTBEAT_S = 5.0
"""A live stream's ``updated_at`` is renewed at least this often, so a reader can tell a
stream whose server died (``lost``) from a quiet one."""

CLOSE_WAIT_S = 5.0
"""How long to wait for the client's answer to a close frame before dropping the socket."""

STOP_WAIT_S = 20.0
"""How long a stopping worker waits for its streams to be stored."""

TRACK_LAG_S = 5.0
"""Retained two-track audio: how far one track may run ahead of the other before the
other is padded with silence."""

STATUS_LIVE, STATUS_DONE, STATUS_INTERRUPTED, STATUS_FAILED, STATUS_LOST = (
    "live",
    "done",
    "interrupted",
    "failed",
    "lost",
)

_ws_logger = logging.getLogger("voicecheck.service.websocket")
_ws_logger.setLevel(logging.WARNING)  # no line per opened and closed connection


class UpgradeRequiredError(VoiceCheckError):
    """A stream endpoint was called without a WebSocket upgrade."""

    status = 426
    code = "upgrade_required"
    title = "Upgrade required"


class StreamsUnavailableError(VoiceCheckError):
    """The server cannot hand a connection over to its stream loop."""

    status = 501
    code = "streams_unavailable"
    title = "Streams unavailable"


class StreamFault(Exception):
    """What ends a stream early: a close code, a reason for the client, a problem code."""

    def __init__(self, close_code: int, reason: str, code: str = "interrupted") -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.code = code


# --- the upgrade request (a Flask view in a gunicorn worker) ------------------------------


@dataclass
class Opening:
    """What the upgrade request established about a stream."""

    stream_id: str
    kind: str
    request_id: str | None
    client_addr: str | None
    path: str
    audit_id: int
    key: ApiKey | None
    encoding: str = "mulaw"
    sample_rate: int = ANALYSIS_SR_HZ
    channels: int = 1
    call_id: str | None = None
    callback_url: str | None = None
    refused: StreamFault | None = None


def _query_key() -> str | None:
    value = (request.args.get("api_key") or "").strip()
    return value or None


def _authenticate(svc: Service) -> ApiKey:
    """The key of the Authorization header, or of ``?api_key=`` for clients without headers."""
    header = request.headers.get("Authorization")
    if not header and _query_key():
        header = f"Bearer {_query_key()}"
    key = check_key(svc.store, header)
    if not key.allows("analyze"):
        raise ForbiddenError(
            f"key {key.name!r} lacks the 'analyze' scope streams need "
            f"(it has: {', '.join(sorted(key.scopes))})"
        )
    return key


def _choice(name: str, allowed: tuple, default: Any, kind: type = str) -> Any:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw.strip().lower() if kind is str else raw.strip())
    except ValueError:
        value = None
    if value not in allowed:
        raise RequestError(
            f"{name}={raw!r} is not supported; expected one of "
            f"{', '.join(str(a) for a in allowed)}",
            parameter=name,
        )
    return value


def _call_id() -> str | None:
    value = request.args.get("call_id")
    if value is None:
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable()).strip()
    if not cleaned or len(cleaned) > 200:
        raise RequestError("call_id must be 1 to 200 printable characters", parameter="call_id")
    return cleaned


def _check_upgrade() -> tuple[ServerProtocol, Request]:
    """The WebSocket handshake of this request, checked by the protocol implementation."""
    upgrade = (request.headers.get("Upgrade") or "").lower()
    if upgrade != "websocket":
        raise UpgradeRequiredError(
            f"{request.path} is a WebSocket endpoint: connect with a WebSocket client "
            "(ws:// or wss://, RFC 6455)"
        )
    # The request head goes through the protocol's own parser, as a Sans-I/O server reads it.
    lines = [f"GET {request.path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    max_size = int(service().settings.stream_max_message_kb * 1024)
    ws = ServerProtocol(logger=_ws_logger, max_size=max_size)
    ws.receive_data(head)
    events = ws.events_received()
    if len(events) != 1 or not isinstance(events[0], Request):
        raise RequestError("the WebSocket handshake request could not be read")
    return ws, events[0]


def _open_audit(svc: Service, key: ApiKey | None, path: str) -> int:
    row = {
        "time": time.time(),
        "request_id": g.get("request_id"),
        "key_id": key.id if key else None,
        "key_name": key.name if key else None,
        "client_addr": request.remote_addr,
        "method": "GET",
        "path": path,
        "status": NO_ANSWER,
        "outcome": RECEIVED,
        "model_id": svc.detector.model_id,
        "worker": worker_name(),
    }
    return svc.store.open_audit(row)


def _hijack(sock: socket.socket) -> socket.socket:
    """Take the connection away from gunicorn; a socket of our own on it.

    The worker's socket object is left pointing at a fresh, unconnected socket, so that
    the worker's own closing of it (after :class:`_HandedOver` ends the request) touches
    nothing of the WebSocket connection.
    """
    fd = os.dup(sock.fileno())
    spare = socket.socket(sock.family, socket.SOCK_STREAM)
    try:
        os.dup2(spare.fileno(), sock.fileno())
    finally:
        spare.close()
    own = socket.socket(fileno=fd)
    own.setblocking(False)
    return own


class _HandedOver(Response):
    """The answer of an upgraded request: the WSGI server must write and close nothing.

    The 101 is already sent and the connection belongs to the stream loop.

    gunicorn ends a request whose application raises ``StopIteration`` without writing an
    answer (it closes only its own socket object, which :func:`_hijack` emptied).
    """

    def __call__(self, environ: dict, start_response: Any) -> Any:  # noqa: D102
        raise StopIteration


def _upgrade(svc: Service, opening: Opening, ws: ServerProtocol, handshake: Request) -> Response:
    """Send the 101 and hand the connection to this process's stream loop."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None or isinstance(sock, ssl.SSLSocket):
        raise StreamsUnavailableError(
            "this server cannot hold WebSocket streams; run it with `voicecheck serve` "
            "(TLS terminated by a reverse proxy)"
        )
    response = ws.accept(handshake)
    if response.status_code != 101:
        detail = response.body.decode("utf-8", "replace").strip() if response.body else ""
        raise RequestError(
            f"the WebSocket handshake is not valid: {detail or response.reason_phrase}"
        )
    response.headers.pop("Server", None)
    response.headers["X-Request-ID"] = g.get("request_id") or ""
    ws.send_response(response)
    hub = svc.streams
    hub.start()
    opening.audit_id = _open_audit(svc, opening.key, opening.path)
    if opening.key is not None and opening.refused is None:
        limit = svc.settings.stream_max_per_key
        if svc.store.count_open_streams(opening.key.id, opening.audit_id) > limit:
            opening.refused = StreamFault(
                CLOSE_POLICY,
                f"key {opening.key.name!r} has {limit} streams open, the most allowed at once",
                "too_many_streams",
            )
    try:
        sock.sendall(b"".join(ws.data_to_send()))
        own = _hijack(sock)
    except OSError:
        # The client left during the handshake: nothing was heard, the row says so.
        svc.store.write_audit(
            [{"id": opening.audit_id, "status": NO_ANSWER, "outcome": "interrupted"}]
        )
        g.audited, g.audit_id = True, None
        raise
    hub.adopt(own, ws, opening)
    # The stream completes its own audit row; the request's hooks must not.
    g.audited = True
    g.audit_id = None
    return _HandedOver(status=101)


@bp.after_request
def _upgrade_header(response: Response) -> Response:
    if response.status_code == 426:
        response.headers["Upgrade"] = "websocket"
    return response


@bp.get("/streams", websocket=True)
@bp.get("/streams")  # the same view answers a plain request with 426
def raw_stream() -> Response:
    """Score a live call sent as binary WebSocket messages of raw audio."""
    svc = service()
    ws, handshake = _check_upgrade()
    g.key = _authenticate(svc)
    g.rate = check_rate(svc.store, g.key, svc.settings.rate_limit)
    callback = request.args.get("callback_url") or None
    if callback is not None:
        callback = check_callback_url(callback, svc.settings)
    opening = Opening(
        stream_id=new_id("st"),
        kind="raw",
        request_id=g.get("request_id"),
        client_addr=request.remote_addr,
        path=request.path,
        audit_id=0,
        key=g.key,
        encoding=_choice("encoding", tuple(ENCODINGS), "mulaw"),
        sample_rate=_choice("sample_rate", SAMPLE_RATES_HZ, ANALYSIS_SR_HZ, int),
        channels=_choice("channels", (1, 2), 1, int),
        call_id=_call_id(),
        callback_url=callback or _key_callback(svc, g.key),
    )
    return _upgrade(svc, opening, ws, handshake)


@bp.get("/streams/twilio", websocket=True)
@bp.get("/streams/twilio")
def twilio_stream() -> Response:
    """Score a live call sent by Twilio Media Streams (TwiML ``<Stream>``)."""
    svc = service()
    ws, handshake = _check_upgrade()
    key = None
    if request.headers.get("Authorization") or _query_key():
        key = g.key = _authenticate(svc)
        g.rate = check_rate(svc.store, key, svc.settings.rate_limit)
    opening = Opening(
        stream_id=new_id("st"),
        kind="twilio",
        request_id=g.get("request_id"),
        client_addr=request.remote_addr,
        path=request.path,
        audit_id=0,
        key=key,
    )
    return _upgrade(svc, opening, ws, handshake)


def _key_callback(svc: Service, key: ApiKey) -> str | None:
    row = svc.store.get_key(key.id)
    return (row or {}).get("callback_url") or None


@bp.get("/streams/<stream_id>")
@requires("read", counted=False)
def get_stream(stream_id: str) -> Response:
    """A stream's live state, then the id of its stored analysis (its id or Twilio's)."""
    svc = service()
    row = visible(svc.store.get_stream(stream_id), "stream", stream_id)
    return jsonify(stream_body(svc, row))


def stream_body(svc: Service, row: dict[str, Any]) -> dict[str, Any]:
    """The public JSON of a stream row."""
    state = json.loads(row["state"] or "{}")
    status = row["status"]
    stale = svc.settings.stream_idle_timeout_s + 3 * HEARTBEAT_S
    if status == STATUS_LIVE and row["updated_at"] < time.time() - stale:
        status = STATUS_LOST  # its server stopped writing it
    body: dict[str, Any] = {
        "id": row["id"],
        "kind": row["kind"],
        "stream_sid": row["external_id"] if row["kind"] == "twilio" else None,
        "call_id": row["call_id"],
        "status": status,
        "started_at": iso(row["started_at"]),
        "updated_at": iso(row["updated_at"]),
        "ended_at": iso(row["ended_at"]),
        "heard_s": row["heard_s"],
        "windows": row["windows"],
        "score": row["score"],
        "verdict": row["verdict"],
        "channels": state.get("channels", []),
        "analysis_id": row["analysis_id"],
        "analysis_url": (
            url_for("api.get_analysis", analysis_id=row["analysis_id"])
            if row["analysis_id"]
            else None
        ),
        "close_code": state.get("close_code"),
        "close_reason": state.get("close_reason"),
        "error": state.get("error"),
        "callback_status": row["callback_status"],
    }
    return body


# --- the stream loop of a worker process ---------------------------------------------------


class StreamHub:
    """The event loop that holds every WebSocket stream of one worker process.

    Scoring runs in the loop (a window costs a few milliseconds); the store and callbacks
    run in small thread pools, so the loop never waits on the disk or the network.
    """

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.sessions: set[Session] = set()
        # One thread: store writes happen in the order they were asked for (a stream's
        # last live state never lands after its final one).
        self.db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stream-store")
        self.calls = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="stream-callback")
        self._lock = threading.Lock()
        self._stopping = False
        self._last_heartbeat = 0.0

    def start(self) -> None:
        """Start the loop thread (once per process, on the first stream)."""
        with self._lock:
            if self.thread is not None:
                return
            self.loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                assert self.loop is not None
                asyncio.set_event_loop(self.loop)
                self.loop.set_exception_handler(self._loop_error)
                self.loop.call_soon(ready.set)
                self.loop.create_task(self._sweep())
                self.loop.run_forever()

            self.thread = threading.Thread(target=run, name="voicecheck-streams", daemon=True)
            self.thread.start()
            ready.wait(10)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.svc.logger.error(
            "stream loop error: %s", context.get("message"), exc_info=exc if exc else None
        )

    def adopt(self, sock: socket.socket, ws: ServerProtocol, opening: Opening) -> None:
        """Take over an upgraded connection (called from a request thread)."""
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self._adopt(sock, ws, opening), self.loop)

    async def _adopt(self, sock: socket.socket, ws: ServerProtocol, opening: Opening) -> None:
        assert self.loop is not None
        session = (TwilioSession if opening.kind == "twilio" else RawSession)(self, ws, opening)
        try:
            await self.loop.connect_accepted_socket(lambda: session, sock=sock)
        except OSError:
            sock.close()
            await session.end(None, dropped=True)

    def stop(self) -> None:
        """End every stream (close code 1001; what was heard is stored), then the loop."""
        if self.loop is None or self._stopping:
            return
        self._stopping = True
        future = asyncio.run_coroutine_threadsafe(self._stop_all(), self.loop)
        try:
            future.result(STOP_WAIT_S)
        except (concurrent.futures.TimeoutError, RuntimeError):
            self.svc.logger.error("streams were still being stored when the worker stopped")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.db.shutdown(wait=True)
        self.calls.shutdown(wait=False)

    async def _stop_all(self) -> None:
        fault = StreamFault(CLOSE_GOING_AWAY, "the server is stopping; reconnect", "interrupted")
        await asyncio.gather(*(s.end(fault) for s in list(self.sessions)))

    async def _sweep(self) -> None:
        """Close idle streams and write the live state of the others, once a second."""
        while True:
            await asyncio.sleep(LIVE_FLUSH_S)
            try:
                await self._sweep_once()
            except Exception:
                self.svc.logger.exception("stream sweep failed")

    async def _sweep_once(self) -> None:
        now = time.time()
        idle = self.svc.settings.stream_idle_timeout_s
        heartbeat = now - self._last_heartbeat >= HEARTBEAT_S
        if heartbeat:
            self._last_heartbeat = now
        rows = []
        for s in list(self.sessions):
            if s.ending:
                continue
            if time.monotonic() - s.last_message > idle:
                s.spawn_end(
                    StreamFault(
                        CLOSE_POLICY,
                        f"no message for {idle:g} s; a stream sends audio continuously",
                        "interrupted",
                    )
                )
                continue
            if s.stored and (s.dirty or heartbeat):
                rows.append(s.live_row(now))
                s.dirty = False
        if rows:
            try:
                await self.run_db(self.svc.store.update_streams, rows)
            except StoreError as exc:
                self.svc.logger.warning("live stream state not written: %s", exc)

    async def run_db(self, fn: Any, *args: Any) -> Any:
        """Run a store call in the store's thread pool."""
        assert self.loop is not None
        return await self.loop.run_in_executor(self.db, fn, *args)

    def callback(self, url: str, payload: dict[str, Any], session: Session) -> None:
        """Deliver a callback in the background; its outcome goes into the stream's state."""
        settings = self.svc.settings

        def send() -> None:
            outcome = deliver(url, payload, settings)
            session.callback_status = f"{payload['event']}: {outcome}"[:200]
            session.dirty = True
            if session.ending and session.stored:  # no longer swept: write it here
                try:
                    self.svc.store.update_streams(
                        [{"id": session.id, "callback_status": session.callback_status}]
                    )
                except StoreError as exc:
                    self.svc.logger.warning("callback status not written: %s", exc)

        self.calls.submit(send)


# --- one stream ------------------------------------------------------------------------


class _AudioFile:
    """Retained stream audio: a WAV file written as the audio comes (nothing held in memory)."""

    _FORMAT_TAG = {"pcm16": 1, "alaw": 6, "mulaw": 7}

    def __init__(self, folder: Path, name: str, encoding: str, rate: int, channels: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.{secrets.token_hex(4)}.part"
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.encoding, self.rate, self.channels = encoding, rate, channels
        self.file.write(self._header(0))
        self.size = 0
        self._tracks: list[bytearray] = [bytearray() for _ in range(channels)]

    def _header(self, data_bytes: int) -> bytes:
        width = SAMPLE_BYTES[self.encoding]
        tag = self._FORMAT_TAG[self.encoding]
        fmt = struct.pack(
            "<HHIIHHH",
            tag,
            self.channels,
            self.rate,
            self.rate * self.channels * width,
            self.channels * width,
            8 * width,
            0,
        )
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
        frames = data_bytes // (self.channels * width)
        if tag != 1:
            chunks += b"fact" + struct.pack("<II", 4, frames)
        riff = 4 + len(chunks) + 8 + data_bytes
        return (
            b"RIFF"
            + struct.pack("<I", riff)
            + b"WAVE"
            + chunks
            + b"data"
            + struct.pack("<I", data_bytes)
        )

    def write(self, data: bytes) -> None:
        """Append interleaved audio."""
        self.file.write(data)
        self.size += len(data)

    def write_track(self, track: int, data: bytes) -> None:
        """Append one track's audio (1-byte codes); tracks are interleaved as they align."""
        self._tracks[track] += data
        n = min(len(t) for t in self._tracks)
        lag = int(TRACK_LAG_S * self.rate)
        longest = max(len(t) for t in self._tracks)
        if longest - n > lag:  # a silent track: pad it rather than hold the other
            for t in self._tracks:
                t += SILENCE_CODE[self.encoding] * max(0, longest - lag - len(t))
            n = min(len(t) for t in self._tracks)
        if n:
            parts = [np.frombuffer(bytes(t[:n]), np.uint8) for t in self._tracks]
            self.write(np.stack(parts, axis=1).tobytes())
            for t in self._tracks:
                del t[:n]

    def close(self, final: Path | None) -> str | None:
        """Finish the file and move it to ``final`` (None: delete it); the path kept."""
        if self.channels > 1 and any(self._tracks):
            longest = max(len(t) for t in self._tracks)
            for t in self._tracks:
                t += SILENCE_CODE[self.encoding] * (longest - len(t))
            self.write_track(0, b"")
        self.file.seek(0)
        self.file.write(self._header(self.size))
        self.file.close()
        if final is None or self.size == 0:
            self.path.unlink(missing_ok=True)
            return None
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            self.path.unlink(missing_ok=True)
        else:
            self.path.replace(final)
        return str(final)


@dataclass
class _Outcome:
    """How a stream ended."""

    fault: StreamFault | None
    dropped: bool = False
    by_client_close: bool = False


class Session(asyncio.Protocol):
    """One WebSocket stream in the loop: protocol, scoring, storage.

    Subclasses speak the raw and the Twilio message formats.
    """

    kind = "raw"
    tells_result = True
    """Whether the client hears the result over the socket (Twilio does not)."""

    def __init__(self, hub: StreamHub, ws: ServerProtocol, opening: Opening) -> None:
        self.hub = hub
        self.svc = hub.svc
        self.ws = ws
        self.opening = opening
        self.id = opening.stream_id
        self.key = opening.key
        self.call_id = opening.call_id
        self.external_id: str | None = None
        self.transport: asyncio.Transport | None = None
        self.call: LiveCall | None = None
        self.sha = hashlib.sha256()
        self.size = 0
        self.audio: _AudioFile | None = None
        self.started_at = time.time()
        self.last_message = time.monotonic()
        self.ending = False
        self.stored = False  # the stream row exists
        self.dirty = False
        self.verdict_sent = False
        self.callback_url = opening.callback_url
        self.callback_status: str | None = None
        self.n_windows = 0
        self.encoding = opening.encoding
        self.sample_rate = opening.sample_rate
        self.channels = opening.channels
        self._text: bytearray | None = None  # a fragmented text message being assembled
        self._binary_rest = b""  # bytes of a binary message not yet a whole sample frame
        self._in_binary = False
        self._held: list[bytes] = []  # the echo of a client's close, sent after the result
        self.limit_samples = int(self.svc.settings.max_sync_duration_s * ANALYSIS_SR_HZ)
        self.ended: asyncio.Future | None = None
        self._ended = False
        self._opening_row: asyncio.Future | None = None
        self.input_frames = 0  # sample frames received, at the stream's own rate

    # -- asyncio protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]
        self.hub.sessions.add(self)
        self.ended = asyncio.get_running_loop().create_future()
        if self.opening.refused is not None:
            self.spawn_end(self.opening.refused)
            return
        try:
            self.opened()
        except StreamFault as fault:
            self.spawn_end(fault)
        except Exception:
            self.svc.logger.exception("stream failed to open")
            self.spawn_end(_internal())

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self.ending:
            self._protocol_only(data)
            return
        self.last_message = time.monotonic()
        self.ws.receive_data(data)
        for frame in self.ws.events_received():
            if self.ending:
                break
            try:
                self._frame(frame)
            except StreamFault as fault:
                self.spawn_end(fault)
            except Exception:
                self.svc.logger.exception("stream %s failed", self.id)
                self.spawn_end(_internal())
        self._flush()
        if self.ws.parser_exc is not None and not self.ending:
            # The protocol failed the connection itself (too big, bad framing, bad UTF-8).
            code = self.ws.close_sent.code if self.ws.close_sent else CLOSE_INTERNAL_ERROR
            reason = self.ws.close_sent.reason if self.ws.close_sent else str(self.ws.parser_exc)
            self.spawn_end(StreamFault(code, reason, "interrupted"), closed=True)

    def eof_received(self) -> bool:  # noqa: D102
        self.ws.receive_eof()
        if not self.ending:
            self.spawn_end(None, dropped=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        if not self.ending:
            self.spawn_end(None, dropped=True)

    # -- frames ---------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op is Opcode.CLOSE:
            self._held = self.ws.data_to_send()  # the echo waits for the result
            self.spawn_end(None, by_client_close=True)
        elif op is Opcode.TEXT or (op is Opcode.CONT and self._text is not None):
            self._text = (self._text or bytearray()) + frame.data
            if len(self._text) > MAX_TEXT_BYTES:
                raise StreamFault(
                    CLOSE_TOO_BIG,
                    f"a text message passed {MAX_TEXT_BYTES // 1024} KiB; "
                    "control messages are small",
                )
            if frame.fin:
                text, self._text = bytes(self._text), None
                self.text(text)
        elif op is Opcode.BINARY or op is Opcode.CONT:
            self._in_binary = not frame.fin
            self.binary(frame.data, fin=frame.fin)

    def text(self, data: bytes) -> None:
        """A whole text message."""
        raise NotImplementedError

    def binary(self, data: bytes, *, fin: bool) -> None:
        """Part of a binary message (``fin``: its last part)."""
        raise NotImplementedError

    def opened(self) -> None:
        """The connection is in the loop: start the stream."""
        raise NotImplementedError

    def _protocol_only(self, data: bytes) -> None:
        """After the stream ended: let the protocol finish the close handshake."""
        try:
            self.ws.receive_data(data)
        except EOFError:
            return
        self.ws.events_received()
        self._flush()

    # -- sending --------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Send a JSON text message (when the connection still takes one)."""
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.ws.send_text(json.dumps(message, separators=(",", ":")).encode())
        except InvalidState:
            return
        self._flush()

    def _flush(self) -> None:
        if self.transport is None:
            return
        for chunk in self.ws.data_to_send():
            self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        assert self.transport is not None
        if chunk is SEND_EOF or chunk == b"":
            if not self.transport.is_closing():
                self.transport.close()
        elif not self.transport.is_closing():
            self.transport.write(chunk)

    # -- scoring --------------------------------------------------------------------------

    def begin(self, *, channels: int, sample_rate: int, encoding: str) -> None:
        """Start the analysis and the stored state (once the format and the key are known)."""
        self.channels, self.sample_rate, self.encoding = channels, sample_rate, encoding
        self.call = LiveCall(self.svc.detector, channels=channels, sample_rate=sample_rate)
        if self.svc.settings.retain_audio:
            folder = Path(self.svc.settings.data_dir) / "audio" / "streams"
            self.audio = _AudioFile(folder, self.id, encoding, sample_rate, channels)
        now = time.time()
        row = {
            "id": self.id,
            "external_id": self.external_id,
            "kind": self.kind,
            "key_id": self.key.id if self.key else None,
            "call_id": self.call_id,
            "status": STATUS_LIVE,
            "started_at": now,
            "updated_at": now,
            "heard_s": 0.0,
            "windows": 0,
            "state": json.dumps({"channels": []}),
            "worker": worker_name(),
        }
        self.stored = True
        self._opening_row = asyncio.ensure_future(self._store_row(row))

    async def _store_row(self, row: dict[str, Any]) -> None:
        try:
            await self.hub.run_db(self.svc.store.open_stream, row)
        except StoreError as exc:
            self.svc.logger.error("stream %s not recorded: %s", self.id, exc)

    def heard(self, data: bytes) -> None:
        """Count received audio bytes (the sha256 is of the audio as received, in order)."""
        self.sha.update(data)
        self.size += len(data)

    def windows(self, done: list[Window]) -> None:
        """Report scored windows and the running score."""
        if not done:
            return
        assert self.call is not None
        self.n_windows += len(done)
        score, verdict = self.call.running()
        for w in done:
            self.on_window(w, score, verdict)
        self.dirty = True
        if verdict != "inconclusive" and not self.verdict_sent:
            self.verdict_sent = True
            if self.callback_url:
                self.hub.callback(
                    self.callback_url,
                    {
                        "event": "verdict",
                        "stream_id": self.id,
                        "stream_sid": self.external_id,
                        "call_id": self.call_id,
                        "score": score,
                        "verdict": verdict,
                        "heard_s": round(self.call.duration_s, 3),
                    },
                    self,
                )

    def on_window(self, window: Window, call_score: float | None, verdict: str) -> None:
        """Tell the client about a window (the raw protocol sends a message)."""

    def too_long(self) -> StreamFault:
        """The fault of a stream that reached the most audio one stream may hold."""
        return StreamFault(
            CLOSE_POLICY,
            f"the stream reached {self.svc.settings.max_sync_duration_s:g} s of audio, "
            "the most one stream may hold",
            "interrupted",
        )

    def live_row(self, now: float) -> dict[str, Any]:
        """The stream's live state as a store row."""
        score, verdict = self.call.running() if self.call else (None, "inconclusive")
        channels = []
        if self.call is not None:
            for ch in self.call.live:
                running = ch.running_score()
                channels.append(
                    {
                        "channel": ch.channel,
                        "heard_s": round(ch.duration_s, 3),
                        "windows": len(ch.windows),
                        "score": None if running is None else round(running, 4),
                    }
                )
        return {
            "id": self.id,
            "updated_at": now,
            "heard_s": round(self.call.duration_s, 3) if self.call else 0.0,
            "windows": self.n_windows,
            "score": score,
            "verdict": verdict if score is not None else None,
            "state": json.dumps({"channels": channels}),
            "callback_status": self.callback_status,
        }

    # -- the end ------------------------------------------------------------------------

    def spawn_end(
        self,
        fault: StreamFault | None,
        *,
        dropped: bool = False,
        by_client_close: bool = False,
        closed: bool = False,
    ) -> None:
        """End the stream (from a callback of the loop)."""
        if self.ending:
            return
        self.ending = True
        asyncio.ensure_future(
            self.end(fault, dropped=dropped, by_client_close=by_client_close, closed=closed)
        )

    async def end(
        self,
        fault: StreamFault | None,
        *,
        dropped: bool = False,
        by_client_close: bool = False,
        closed: bool = False,
    ) -> None:
        """Score what was heard, store it with its audit row, tell the client, close."""
        self.ending = True
        if self._ended:
            if self.ended is not None:
                await asyncio.shield(self.ended)
            return
        self._ended = True
        try:
            message = await self._finish(fault, dropped=dropped)
        except Exception:
            self.svc.logger.exception("stream %s could not be finished", self.id)
            message = {"event": "result", "stream_id": self.id, "analysis_id": None}
            message["error"] = {"code": "internal_error", "detail": "the stream was not stored"}
            fault = fault or _internal()
        if self.transport is not None and not dropped and not closed:
            self.after_result(message, fault, by_client_close=by_client_close)
        self.hub.sessions.discard(self)
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(None)

    def after_result(
        self, message: dict[str, Any], fault: StreamFault | None, *, by_client_close: bool
    ) -> None:
        """Send the result (raw protocol) and close the connection."""
        assert self.transport is not None
        if by_client_close:
            if self.tells_result:
                frame = Frame(Opcode.TEXT, json.dumps(message, separators=(",", ":")).encode())
                self._write(frame.serialize(mask=False, extensions=[]))
            for chunk in self._held:
                self._write(chunk)
            return
        if self.tells_result:
            self.send(message)
        code = fault.close_code if fault else CLOSE_NORMAL
        reason = fault.reason if fault else "the stream ended; the call is stored"
        try:
            self.ws.send_close(code, _short(reason))
        except InvalidState:
            pass
        self._flush()
        loop = asyncio.get_running_loop()
        loop.call_later(CLOSE_WAIT_S, self._drop)

    def _drop(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    async def _finish(self, fault: StreamFault | None, *, dropped: bool) -> dict[str, Any]:
        """Score the rest, store analysis and audit row together; the result message."""
        svc = self.svc
        interrupted = dropped or (fault is not None and fault.close_code != CLOSE_NORMAL)
        now = time.time()
        analysis_row = None
        error: dict[str, Any] | None = None
        result_fields: dict[str, Any] = {}
        if self.call is not None:
            done = self.call.finish()
            self.windows(done)
            facts = {
                "container": "stream",
                "codec": "pcm_mulaw" if self.kind == "twilio" else ENCODINGS[self.encoding],
                "sample_rate": self.sample_rate,
                "channels": self.channels,
                "duration_s": round(self.call.duration_s, 3),
                "size_bytes": self.size,
                "decoder": "stream",
            }
            digest = self.sha.hexdigest()
            try:
                analysis = self.call.analysis(facts)
            except AudioError as exc:
                error = {"code": exc.code, "detail": str(exc)}
            else:
                body = analysis.to_dict()
                ended = "dropped" if dropped else "client" if fault is None else fault.code
                body["source"] = "stream"
                body["stream"] = {
                    "id": self.id,
                    "kind": self.kind,
                    "stream_sid": self.external_id,
                    "call_id": self.call_id,
                    "interrupted": interrupted,
                    "ended_by": ended,
                    "close_code": None if fault is None else fault.close_code,
                    "close_reason": None if fault is None else fault.reason,
                }
                path = None
                if self.audio is not None:
                    final = Path(svc.settings.data_dir) / "audio" / digest[:2] / digest
                    path = await self.hub.run_db(self.audio.close, final)
                    self.audio = None
                analysis_row = {
                    "id": new_id("an"),
                    "created_at": now,
                    "key_id": self.key.id if self.key else None,
                    "request_id": self.opening.request_id,
                    "job_id": None,
                    "filename": self.call_id,
                    "sha256": digest,
                    "size_bytes": self.size,
                    "verdict": analysis.verdict,
                    "score": analysis.score,
                    "model_id": analysis.model["id"],
                    "result": json.dumps(body),
                    "audio_path": path,
                }
                result_fields = {"score": analysis.score, "verdict": analysis.verdict}
        if self.audio is not None:
            await self.hub.run_db(self.audio.close, None)
            self.audio = None
        if fault is not None and fault.code not in ("interrupted",):
            outcome = fault.code  # refused: too many streams, bad key
        elif interrupted:
            outcome = "interrupted"
        elif error is not None:
            outcome = error["code"]
        else:
            outcome = "ok"
        audit_row = {
            "id": self.opening.audit_id,
            "status": 101,
            "outcome": outcome,
            "key_id": self.key.id if self.key else None,
            "key_name": self.key.name if self.key else None,
            "filename": self.call_id,
            "sha256": self.sha.hexdigest() if self.size else None,
            "size_bytes": self.size,
            "duration_s": round(self.call.duration_s, 3) if self.call else None,
            "processing_ms": round(self.call.cpu_s * 1000, 1) if self.call else None,
            "verdict": result_fields.get("verdict"),
            "score": result_fields.get("score"),
            "model_id": svc.detector.model_id,
            "analysis_id": analysis_row["id"] if analysis_row else None,
        }
        state = {
            "channels": json.loads(self.live_row(now)["state"])["channels"],
            "close_code": None if fault is None else fault.close_code,
            "close_reason": None if fault is None else fault.reason,
            "error": error,
        }
        if fault is not None and fault.code != "interrupted" and error is None:
            state["error"] = {"code": fault.code, "detail": fault.reason}
        status = STATUS_DONE
        if interrupted:
            status = STATUS_INTERRUPTED
        if analysis_row is None and not interrupted:
            status = STATUS_FAILED
        stream_row = {
            **self.live_row(now),
            "status": status,
            "ended_at": now,
            "analysis_id": analysis_row["id"] if analysis_row else None,
            "state": json.dumps(state),
        }
        if result_fields:
            stream_row.update(result_fields)
        if not self.stored:
            stream_row = None
        if self._opening_row is not None:
            await self._opening_row
        try:
            await self.hub.run_db(self._store_end, stream_row, analysis_row, audit_row)
        except StoreError as exc:
            svc.logger.error("stream %s not stored: %s", self.id, exc)
            error = {"code": exc.code, "detail": "the stream could not be stored; retry later"}
            analysis_row = None
        if analysis_row is not None:
            svc.metrics.verdicts.labels(analysis_row["verdict"]).inc()
            svc.metrics.audio_seconds.inc(float(self.call.duration_s if self.call else 0.0))
        elif error is not None:
            svc.metrics.errors.labels(error["code"]).inc()
        message: dict[str, Any] = {
            "event": "result",
            "stream_id": self.id,
            "analysis_id": analysis_row["id"] if analysis_row else None,
            "score": result_fields.get("score"),
            "verdict": result_fields.get("verdict"),
            "duration_s": round(self.call.duration_s, 3) if self.call else 0.0,
            "interrupted": interrupted,
        }
        if error is not None:
            message["error"] = error
        elif fault is not None and fault.code != "interrupted":
            message["error"] = {"code": fault.code, "detail": fault.reason}
        svc.logger.info(
            "stream ended",
            extra={
                "request_id": self.opening.request_id,
                "stream_id": self.id,
                "key_id": self.key.id if self.key else None,
                "outcome": outcome,
                "duration_s": message["duration_s"],
                "close_code": None if fault is None else fault.close_code,
            },
        )
        if self.callback_url and (analysis_row is not None or self.call is not None):
            self.hub.callback(
                self.callback_url,
                {
                    **message,
                    "stream_sid": self.external_id,
                    "call_id": self.call_id,
                    "analysis_url": (
                        f"/v1/analyses/{analysis_row['id']}" if analysis_row else None
                    ),
                },
                self,
            )
        return message

    def _store_end(
        self,
        stream_row: dict[str, Any] | None,
        analysis_row: dict[str, Any] | None,
        audit_row: dict[str, Any],
    ) -> None:
        store = self.svc.store
        if stream_row is not None:
            store.finish_stream(stream_row, analysis_row, audit_row)
        elif analysis_row is not None:
            store.save_analysis(analysis_row, audit_row)
        else:
            store.write_audit([audit_row])


def _internal() -> StreamFault:
    return StreamFault(CLOSE_INTERNAL_ERROR, "internal error", "internal_error")


def _short(reason: str) -> str:
    """``reason`` cut to the 123 bytes a close frame holds."""
    data = reason.encode()
    if len(data) <= CLOSE_REASON_BYTES:
        return reason
    return data[: CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


class RawSession(Session):
    """``/v1/streams``: binary messages of audio, ``{"event": "stop"}`` to end."""

    kind = "raw"

    def opened(self) -> None:  # noqa: D102
        self.begin(
            channels=self.opening.channels,
            sample_rate=self.opening.sample_rate,
            encoding=self.opening.encoding,
        )
        self.send(
            {
                "event": "started",
                "stream_id": self.id,
                "encoding": self.encoding,
                "sample_rate": self.sample_rate,
                "channels": self.channels,
                "call_id": self.call_id,
            }
        )

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (a sample of every channel)."""
        return SAMPLE_BYTES[self.encoding] * self.channels

    def binary(self, data: bytes, *, fin: bool) -> None:  # noqa: D102
        assert self.call is not None
        if self._binary_rest:
            data = self._binary_rest + data
            self._binary_rest = b""
        width = self.frame_bytes
        whole = len(data) - len(data) % width
        if whole < len(data):
            if fin:
                raise StreamFault(
                    CLOSE_INVALID_DATA,
                    f"a binary message ends inside a sample frame: {self.encoding} with "
                    f"{self.channels} channel(s) takes {width} bytes a frame",
                    "invalid_audio",
                )
            self._binary_rest = data[whole:]
            data = data[:whole]
        if not data:
            return
        limit = int(self.svc.settings.max_sync_duration_s * self.sample_rate)
        room = max(0, limit - self.input_frames) * width
        over = len(data) > room
        if over:
            data = data[:room]
        if data:
            self.heard(data)
            self.input_frames += len(data) // width
            if self.audio is not None:
                self.audio.write(data)
            samples = decode(data, self.encoding).reshape(-1, self.channels)
            self.windows(self.call.push(samples))
        if over:
            raise self.too_long()

    def text(self, data: bytes) -> None:  # noqa: D102
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise StreamFault(
                CLOSE_UNSUPPORTED_DATA,
                'a text message must be a JSON control message: {"event": "stop"}; '
                "send audio as binary messages",
                "invalid_message",
            ) from None
        event = message.get("event") if isinstance(message, dict) else None
        if event == "stop":
            self.spawn_end(None)
            return
        raise StreamFault(
            CLOSE_UNSUPPORTED_DATA,
            f"unknown control message {str(event)[:40]!r}; the one control message is "
            '{"event": "stop"}',
            "invalid_message",
        )

    def on_window(self, window: Window, call_score: float | None, verdict: str) -> None:  # noqa: D102
        self.send(
            {
                "event": "window",
                "channel": window.channel,
                "start_s": round(window.start_s, 3),
                "end_s": round(window.end_s, 3),
                "score": None if window.score is None else round(window.score, 4),
                "call_score": call_score,
                "verdict": verdict,
            }
        )


TWILIO_TRACKS = ("inbound", "outbound")
"""Twilio's track names: the caller's side (channel 0) and the side Twilio plays (1)."""


class TwilioSession(Session):
    """``/v1/streams/twilio``: the JSON messages of Twilio Media Streams.

    ``connected``, ``start``, ``media`` and ``stop`` are read; ``dtmf``, ``mark`` and others
    are ignored. Nothing is sent back but the close: results go to the key's callback URL and
    ``GET /v1/streams/{streamSid}``.
    """

    kind = "twilio"
    tells_result = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracks: tuple[str, ...] = ()
        self.track_samples: list[int] = []

    def opened(self) -> None:  # noqa: D102
        pass

    def binary(self, data: bytes, *, fin: bool) -> None:  # noqa: D102
        raise StreamFault(
            CLOSE_UNSUPPORTED_DATA,
            "Twilio Media Streams send JSON text messages; got a binary message",
            "invalid_message",
        )

    def text(self, data: bytes) -> None:  # noqa: D102
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise StreamFault(
                CLOSE_UNSUPPORTED_DATA,
                "a message is not a Twilio Media Streams message (a JSON object with an event)",
                "invalid_message",
            )
        event = message["event"]
        if event == "media":
            self.media(message.get("media"))
        elif event == "start":
            self.start(message.get("start"), message.get("streamSid"))
        elif event == "stop":
            self.spawn_end(None)

    def start(self, start: Any, stream_sid: Any) -> None:
        """The ``start`` message: the stream's identity, format, tracks and our key."""
        if self.call is not None:
            raise StreamFault(CLOSE_POLICY, "a second start message", "invalid_message")
        if not isinstance(start, dict):
            raise StreamFault(
                CLOSE_POLICY, "the start message has no start object", "invalid_message"
            )
        sid = start.get("streamSid") or stream_sid
        if not isinstance(sid, str) or not sid or len(sid) > 100:
            raise StreamFault(CLOSE_POLICY, "the start message has no streamSid", "invalid_message")
        fmt = start.get("mediaFormat") or {}
        expected = ("audio/x-mulaw", 8000, 1)
        got = (fmt.get("encoding"), _int(fmt.get("sampleRate")), _int(fmt.get("channels")))
        if got != expected:
            raise StreamFault(
                CLOSE_INVALID_DATA,
                f"mediaFormat {got[0]} {got[1]} Hz {got[2]} channel(s) is not the audio/x-mulaw "
                "8000 Hz mono of Twilio Media Streams",
                "invalid_audio",
            )
        tracks = start.get("tracks") or ["inbound"]
        if (
            not isinstance(tracks, list)
            or not tracks
            or len(tracks) > 2
            or any(t not in TWILIO_TRACKS for t in tracks)
            or len(set(tracks)) != len(tracks)
        ):
            raise StreamFault(
                CLOSE_POLICY,
                f"tracks {str(tracks)[:40]} are not inbound and/or outbound",
                "invalid_message",
            )
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            params = {}
        self.external_id = sid
        call_sid = start.get("callSid")
        self.call_id = clean_filename(call_sid) if isinstance(call_sid, str) else None
        if self.key is None:
            self.key = self._check_key(params.get("api_key"))
        self.tracks = tuple(tracks)
        self.track_samples = [0] * len(tracks)
        self.callback_url = _key_callback(self.svc, self.key)
        self.begin(channels=len(tracks), sample_rate=ANALYSIS_SR_HZ, encoding="mulaw")

    def _check_key(self, value: Any) -> ApiKey:
        """Authenticate with the key of ``customParameters`` (inside the loop: a quick query)."""
        svc = self.svc
        header = f"Bearer {value}" if isinstance(value, str) and value else None
        try:
            key = check_key(svc.store, header)
            if not key.allows("analyze"):
                raise ForbiddenError(f"key {key.name!r} lacks the 'analyze' scope streams need")
            check_rate(svc.store, key, svc.settings.rate_limit)
        except (AuthError, ForbiddenError, RateLimitedError) as exc:
            detail = (
                'no API key: add <Parameter name="api_key" value="..."/> to the <Stream>'
                if header is None
                else exc.message
            )
            raise StreamFault(CLOSE_POLICY, detail, exc.code) from None
        svc.store.write_audit(
            [{"id": self.opening.audit_id, "key_id": key.id, "key_name": key.name}]
        )
        limit = svc.settings.stream_max_per_key
        if svc.store.count_open_streams(key.id, self.opening.audit_id) > limit:
            self.key = key
            raise StreamFault(
                CLOSE_POLICY,
                f"key {key.name!r} has {limit} streams open, the most allowed at once",
                "too_many_streams",
            )
        return key

    def media(self, media: Any) -> None:
        """A ``media`` message: base64 mu-law of one track."""
        if self.call is None:
            raise StreamFault(
                CLOSE_POLICY, "a media message came before the start message", "invalid_message"
            )
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise StreamFault(CLOSE_INVALID_DATA, "a media message has no payload", "invalid_audio")
        track = media.get("track") or self.tracks[0]
        if track not in self.tracks:
            raise StreamFault(
                CLOSE_INVALID_DATA,
                f"media of track {str(track)[:20]!r}, which the start message did not list",
                "invalid_audio",
            )
        try:
            data = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            raise StreamFault(
                CLOSE_INVALID_DATA, "a media payload is not valid base64", "invalid_audio"
            ) from None
        channel = self.tracks.index(track)
        # A gap in a track (Twilio's timestamps are milliseconds from the start) is silence.
        at = _int(media.get("timestamp"))
        if at is not None and at >= 0:
            gap = at * ANALYSIS_SR_HZ // 1000 - self.track_samples[channel]
            if gap >= ANALYSIS_SR_HZ // 50:  # a whole 20 ms chunk missing
                gap = min(gap, self.limit_samples)
                self._track_audio(channel, SILENCE_CODE["mulaw"] * gap, count=False)
        self._track_audio(channel, data)

    def _track_audio(self, channel: int, data: bytes, *, count: bool = True) -> None:
        assert self.call is not None
        room = max(0, self.limit_samples - self.track_samples[channel])
        over = len(data) > room
        if over:
            data = data[:room]
        if data:
            if count:
                self.heard(data)
            if self.audio is not None:
                self.audio.write_track(channel, data)
            self.track_samples[channel] += len(data)
            self.windows(self.call.push_channel(channel, decode(data, "mulaw")))
        if over:
            raise self.too_long()


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
