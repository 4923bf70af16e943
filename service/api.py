"""``/v1`` scoring endpoints: analyze one recording, a batch, and read a stored result."""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote

from flask import Blueprint, Response, g, jsonify, request, url_for

from voicecheck.errors import AudioTooLongError, UnsupportedFormatError, VoiceCheckError
from voicecheck.scoring import analyze

from . import Service, service
from .audit import open_request, record, request_row, written
from .auth import ForbiddenError, check_key, check_rate
from .problems import SUPPORTED_TYPES, NotFoundError, RequestError, TooLargeError
from .store import StoreError, iso, new_id

bp = Blueprint("api", __name__, url_prefix="/v1")

READ_CHUNK_BYTES = 1 << 20
"""Uploads are read in pieces of this many bytes, so that one over the limit is refused
after at most the limit has been read, whatever the request announced."""

MULTIPART_SLACK_BYTES = 1 << 20
"""How far a one-file request body may exceed ``max_upload_mb``: the multipart framing."""

IDEMPOTENCY_KEY_CHARS = 200
"""Longest ``Idempotency-Key`` accepted, in characters."""


def visible(row: dict[str, Any] | None, kind: str, ident: str) -> dict[str, Any]:
    """``row`` when the request's key may see it (its own, or any with admin); else 404.

    Another key's analysis or job answers exactly like one that does not exist.
    """
    if row is None or not (g.key.allows("admin") or row["key_id"] == g.key.id):
        raise NotFoundError(f"no {kind} {ident!r} is visible to this key")
    return row


def requires(scope: str, *, counted: bool = True) -> Callable:
    """Check the Bearer key, its ``scope`` and (when ``counted``) its rate limit."""

    def wrap(view: Callable) -> Callable:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            svc = service()
            g.key = check_key(svc.store, request.headers.get("Authorization"))
            if not g.key.allows(scope):
                raise ForbiddenError(
                    f"key {g.key.name!r} lacks the {scope!r} scope this endpoint needs "
                    f"(it has: {', '.join(sorted(g.key.scopes))})"
                )
            if counted:
                g.rate = check_rate(svc.store, g.key, svc.settings.rate_limit)
            return view(*args, **kwargs)

        return inner

    return wrap


@dataclass
class Upload:
    """One uploaded recording."""

    data: bytes
    filename: str | None
    content_type: str | None

    @functools.cached_property
    def sha256(self) -> str:
        """SHA-256 of the uploaded bytes, hex (computed once)."""
        return hashlib.sha256(self.data).hexdigest()


def clean_filename(name: str | None) -> str | None:
    r"""A client's file name without control characters or folders, at most 255 characters.

    >>> clean_filename("../calls/ma\x00rch\n.wav")
    'march.wav'
    """
    if not name:
        return None
    name = "".join(ch for ch in name if ch.isprintable())
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or None


def too_large(name: str | None, size: int, limit_mb: float) -> TooLargeError:
    """The 413 problem for a file of ``size`` bytes over a per-file limit of ``limit_mb``."""
    return TooLargeError(
        f"{name or 'the upload'} is {size / 1024 / 1024:.1f} MiB; "
        f"at most {limit_mb:g} MiB is accepted per file here",
        filename=name,
        limit_mb=limit_mb,
    )


def _media_type() -> str:
    return (request.mimetype or "").lower()


@dataclass
class Part:
    """One incoming recording, not read yet."""

    stream: BinaryIO
    filename: str | None
    content_type: str | None


def incoming(*, field: str = "file", many: bool = False, limit_mb: float) -> list[Part]:
    """The recordings in this request, as streams: multipart ``field`` parts, or the raw body.

    Raises
    ------
    RequestError, TooLargeError, UnsupportedFormatError
    """
    mt = _media_type()
    if mt == "multipart/form-data":
        parts = request.files.getlist(field)
        if not parts and field in request.form:
            raise RequestError(
                f"the {field!r} part has no file name, so it arrived as a form field; send it "
                f"as a file (curl: -F {field}=@call.wav)"
            )
        if not parts:
            others = ", ".join(sorted(request.files)) or "none"
            raise RequestError(f"the multipart body has no {field!r} part (parts found: {others})")
        if not many and len(parts) > 1:
            raise RequestError(
                f"send one {field!r} part here; use /v1/analyze/batch for several files"
            )
        return [Part(p.stream, clean_filename(p.filename), p.mimetype or None) for p in parts]
    if not mt:
        raise RequestError(
            "send the recording as multipart/form-data (field 'file') or as the raw body "
            "with an audio Content-Type"
        )
    if mt not in SUPPORTED_TYPES and not mt.startswith("audio/"):
        raise UnsupportedFormatError(
            f"Content-Type {mt} is not an audio type; send multipart/form-data or one of the "
            "supported types"
        )
    if many:
        raise RequestError(f"send several files as multipart/form-data parts named {field!r}")
    name = clean_filename(unquote(request.headers.get("X-Filename") or ""))
    length = request.content_length
    if length is not None and length > limit_mb * 1024 * 1024:
        raise too_large(name, length, limit_mb)
    return [Part(request.stream, name, mt)]


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` header, or None; 400 when it is too long."""
    value = (request.headers.get("Idempotency-Key") or "").strip() or None
    if value is not None and len(value) > IDEMPOTENCY_KEY_CHARS:
        raise RequestError(
            f"the Idempotency-Key header is longer than {IDEMPOTENCY_KEY_CHARS} characters"
        )
    return value


def uploads(svc: Service, *, field: str = "file", many: bool = False) -> list[Upload]:
    """The recordings in this request, read into memory (at most ``max_upload_mb`` each)."""
    parts = incoming(field=field, many=many, limit_mb=svc.settings.max_upload_mb)
    return [read_upload(svc, part) for part in parts]


def read_upload(svc: Service, part: Part) -> Upload:
    """Read one incoming recording into memory; 413 as soon as it passes ``max_upload_mb``.

    A body without a length (``Transfer-Encoding: chunked``) or with a false one is read
    piece by piece, so a refused upload costs at most the limit in memory and time.
    """
    limit = svc.settings.max_upload_bytes
    pieces: list[bytes] = []
    size = 0
    while piece := part.stream.read(min(READ_CHUNK_BYTES, limit + 1 - size)):
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            pieces.clear()
            raise too_large(part.filename, size, svc.settings.max_upload_mb)
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    return Upload(data, part.filename, part.content_type)


def retain(svc: Service, upload: Upload, *, always: bool = False) -> str | None:
    """Keep the uploaded bytes under ``<data_dir>/audio`` (once per sha256); returns the path.

    Only when ``retain_audio`` is on, unless ``always`` (the console keeps its uploads).
    """
    if not (always or svc.settings.retain_audio):
        return None
    digest = upload.sha256
    path = Path(svc.settings.data_dir) / "audio" / digest[:2] / digest
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.part")  # workers may race on one file
        tmp.write_bytes(upload.data)
        tmp.replace(path)
    return str(path)


def analysis_body(row: dict[str, Any]) -> dict[str, Any]:
    """The public JSON of a stored analysis row."""
    result = json.loads(row["result"])
    body: dict[str, Any] = {
        "id": row["id"],
        "url": url_for("api.get_analysis", analysis_id=row["id"]),
        "created_at": iso(row["created_at"]),
        "filename": row["filename"],
        "sha256": row["sha256"],
        "size_bytes": row["size_bytes"],
    }
    if row.get("job_id"):
        body["job_id"] = row["job_id"]
    body.update(result)
    return body


def score_upload(
    svc: Service,
    upload: Upload,
    *,
    max_duration_s: float,
    job_id: str | None = None,
    explain: bool = False,
) -> tuple[dict[str, Any] | None, VoiceCheckError | None, dict[str, Any]]:
    """Score one upload; returns (analysis row, error, audit fields) — one of the first two.

    ``explain`` adds the cues behind the score (:mod:`voicecheck.explain`).
    """
    started = time.perf_counter()
    digest = upload.sha256
    audit: dict[str, Any] = {
        "filename": upload.filename,
        "sha256": digest,
        "size_bytes": len(upload.data),
        "model_id": svc.detector.model_id,
        "job_id": job_id,
    }
    try:
        result = analyze(upload.data, svc.detector, max_duration_s=max_duration_s, explain=explain)
    except VoiceCheckError as exc:
        audio = exc.details.get("audio")
        if isinstance(exc, AudioTooLongError) and job_id is None:
            exc.message += "; send longer recordings to POST /v1/jobs"
        audit.update(
            status=exc.status,
            outcome=exc.code,
            duration_s=getattr(audio, "duration_s", None),
            processing_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        svc.metrics.errors.labels(exc.code).inc()
        return None, exc, audit
    body = result.to_dict()
    analysis_id = new_id("an")
    row = {
        "id": analysis_id,
        "created_at": time.time(),
        "key_id": g.key.id if g.get("key") else None,
        "request_id": g.get("request_id"),
        "job_id": job_id,
        "filename": upload.filename,
        "sha256": digest,
        "size_bytes": len(upload.data),
        "verdict": result.verdict,
        "score": result.score,
        "model_id": result.model["id"],
        "result": json.dumps(body),
        "audio_path": retain(svc, upload),
    }
    audit.update(
        status=200,
        outcome="ok",
        duration_s=round(float(result.audio["duration_s"]), 3),
        processing_ms=result.processing_ms,
        verdict=result.verdict,
        score=result.score,
        analysis_id=analysis_id,
    )
    svc.metrics.verdicts.labels(result.verdict).inc()
    svc.metrics.audio_seconds.inc(float(result.audio["duration_s"]))
    return row, None, audit


def analyze_and_store(
    svc: Service,
    upload: Upload,
    *,
    explain: bool = False,
    finish: Callable[[dict[str, Any]], None] | None = None,
    idempotency_key: str | None = None,
) -> tuple[dict[str, Any] | None, VoiceCheckError | None]:
    """Score one upload while the client waits; store the analysis or the refusal's audit row.

    The file's audit row is written ahead (``received``) before scoring starts, unless
    the request's own received row is still open, and completed afterwards.
    ``finish`` may complete the analysis row before it is stored (the console adds its
    official and what its pages show). ``idempotency_key`` is stored with the analysis.
    """
    if g.get("audit_id") is None:
        open_request(
            svc, filename=upload.filename, sha256=upload.sha256, size_bytes=len(upload.data)
        )
    row, error, fields = score_upload(
        svc, upload, max_duration_s=svc.settings.max_sync_duration_s, explain=explain
    )
    audit_row = request_row(**fields)
    if error is not None:
        record(svc, audit_row)
        return None, error
    assert row is not None
    row["idempotency_key"] = idempotency_key
    if finish is not None:
        finish(row)
    svc.store.save_analysis(row, audit_row)
    written(audit_row)
    return row, None


def _replayed(svc: Service, earlier: dict[str, Any], upload: Upload) -> Response:
    """The answer to a retry whose ``Idempotency-Key`` already made ``earlier``."""
    g.audited = True
    row = request_row(
        status=200,
        outcome="duplicate",
        filename=upload.filename,
        sha256=upload.sha256,
        size_bytes=len(upload.data),
        model_id=svc.detector.model_id,
        analysis_id=earlier["id"],
    )
    record(svc, row)
    return jsonify(analysis_body(earlier))


@bp.post("/analyze")
@requires("analyze")
def analyze_one() -> Response:
    """Score one recording and answer with its analysis.

    With an ``Idempotency-Key`` the key already used (by this API key), the stored
    analysis is answered again instead of a second one being made.
    """
    svc = service()
    # One file: the body may exceed it by the multipart framing, no more.
    request.max_content_length = min(
        svc.settings.max_request_bytes, svc.settings.max_upload_bytes + MULTIPART_SLACK_BYTES
    )
    idempotency = idempotency_key()
    open_request(svc, size_bytes=request.content_length)
    (upload,) = uploads(svc)
    if idempotency is not None:
        earlier = svc.store.find_analysis(g.key.id, idempotency)
        if earlier is not None:
            return _replayed(svc, earlier, upload)
    try:
        row, error = analyze_and_store(svc, upload, idempotency_key=idempotency)
    except StoreError:
        earlier = svc.store.find_analysis(g.key.id, idempotency) if idempotency else None
        if earlier is None:
            raise
        return _replayed(svc, earlier, upload)  # the same request arrived twice at once
    g.audited = True
    if error is not None:
        g.error_code = error.code
        raise error
    assert row is not None
    return jsonify(analysis_body(row))


@bp.post("/analyze/batch")
@requires("analyze")
def analyze_batch() -> Response:
    """Score several recordings (multipart parts named ``file``); one result per file."""
    svc = service()
    open_request(svc, size_bytes=request.content_length)
    files = uploads(svc, many=True)
    if len(files) > svc.settings.max_batch_files:
        raise RequestError(
            f"the batch holds {len(files)} files; at most {svc.settings.max_batch_files} are "
            "accepted here (send more as a job: POST /v1/jobs)",
            max_files=svc.settings.max_batch_files,
        )
    results: list[dict[str, Any]] = []
    for index, upload in enumerate(files):
        row, error = analyze_and_store(svc, upload)
        if error is not None:
            problem = error.to_problem()
            problem.update(index=index, filename=upload.filename, sha256=upload.sha256)
            results.append({"index": index, "filename": upload.filename, "error": problem})
        else:
            assert row is not None
            results.append({"index": index, **analysis_body(row)})
    failed = sum(1 for r in results if "error" in r)
    return jsonify({"count": len(results), "failed": failed, "results": results})


@bp.get("/analyses/<analysis_id>")
@requires("read", counted=False)
def get_analysis(analysis_id: str) -> Response:
    """A stored analysis, to the key that made it (or an admin key)."""
    svc = service()
    row = visible(svc.store.get_analysis(analysis_id), "analysis", analysis_id)
    return jsonify(analysis_body(row))
