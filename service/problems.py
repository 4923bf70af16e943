"""Every error answer as ``application/problem+json`` (RFC 9457) with a stable ``code``.

Covers voicecheck's own errors, Flask's and Werkzeug's HTTP errors (404, 405, 413, ...)
and anything unexpected (500, logged with the request id, never shown to the caller).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from voicecheck.errors import VoiceCheckError

from .telemetry import LOGGER_NAME

PROBLEM_TYPE = "application/problem+json"

SUPPORTED_TYPES = (
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/vnd.wave",
    "audio/basic",
    "audio/flac",
    "audio/x-flac",
    "audio/ogg",
    "audio/opus",
    "audio/mpeg",
    "audio/mp3",
    "audio/mp4",
    "audio/m4a",
    "audio/x-m4a",
    "audio/aac",
    "audio/amr",
    "audio/amr-wb",
    "audio/3gpp",
    "audio/3gpp2",
    "audio/webm",
    "audio/gsm",
    "audio/x-gsm",
    "video/3gpp",
    "video/webm",
    "application/octet-stream",
)
"""Content-Types accepted for a raw request body (the bytes are sniffed either way)."""

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "request_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "unprocessable",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}


class RequestError(VoiceCheckError):
    """The request is malformed: a missing field, a bad parameter."""

    status = 400
    code = "bad_request"
    title = "Bad request"


class NotFoundError(VoiceCheckError):
    """The named resource does not exist (or belongs to another key)."""

    status = 404
    code = "not_found"
    title = "Not found"


class ConflictError(VoiceCheckError):
    """The resource is not in a state that allows the request."""

    status = 409
    code = "conflict"
    title = "Conflict"


class TooLargeError(VoiceCheckError):
    """An uploaded file or the request body is larger than allowed."""

    status = 413
    code = "file_too_large"
    title = "Payload too large"


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": f"https://voicecheck.invalid/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    rid = getattr(g, "request_id", None)
    if rid:
        body["request_id"] = rid
    body.setdefault("instance", request.path)
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_TYPE)


def error_response(exc: VoiceCheckError) -> Response:
    """The problem answer for one of voicecheck's own errors."""
    body = exc.to_problem()
    extra = {
        k: v for k, v in body.items() if k not in {"type", "title", "status", "detail", "code"}
    }
    if exc.status == 415:
        extra["supported_types"] = list(SUPPORTED_TYPES)
    resp = problem(exc.status, exc.code, exc.title, exc.message, **extra)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="voicecheck"'
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        resp.headers["Retry-After"] = str(retry)
    rate = getattr(exc, "rate", None)
    if rate is not None:
        resp.headers.update(rate.headers())
    return resp


def register(app: Flask) -> None:
    """Install the problem+json error handlers on ``app``."""

    def _page(exc: Exception) -> Response | None:
        html_error = app.extensions.get("voicecheck.html_error")
        return html_error(exc) if html_error is not None else None

    @app.errorhandler(VoiceCheckError)
    def _own(exc: VoiceCheckError) -> Response:
        g.error_code = exc.code
        page = _page(exc)
        if exc.status >= 500:
            logging.getLogger(LOGGER_NAME).error(
                "service error",
                extra={
                    "request_id": getattr(g, "request_id", None),
                    "code": exc.code,
                    "detail": exc.message,
                },
            )
        return page or error_response(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, f"http_{status}")
        g.error_code = code
        page = _page(exc)
        if page is not None:
            return page
        detail = exc.description or exc.name
        if status == 404:
            detail = f"nothing is at {request.path}; see /openapi.json for the endpoints"
        elif status == 405:
            allowed = (
                ", ".join(sorted(exc.valid_methods or [])) if hasattr(exc, "valid_methods") else ""
            )
            detail = f"{request.method} is not allowed on {request.path}" + (
                f"; allowed: {allowed}" if allowed else ""
            )
        elif status == 413:
            limit = request.max_content_length  # this endpoint's limit, else the app's
            detail = "the request body is larger than the service accepts here" + (
                f" ({limit / 1024 / 1024:.0f} MiB)" if limit else ""
            )
        resp = problem(status, code, exc.name, detail)
        headers = dict(exc.get_headers())
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            value = headers.get(name)
            if value:
                resp.headers[name] = value
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # pragma: no cover - handled above
            return _http(exc)
        g.error_code = "internal_error"
        logging.getLogger(LOGGER_NAME).exception(
            "unexpected error", extra={"request_id": getattr(g, "request_id", None)}
        )
        page = _page(exc)
        if page is not None:
            return page
        return problem(
            500,
            "internal_error",
            "Internal error",
            "the service failed while answering; the request id identifies it in the logs",
        )
