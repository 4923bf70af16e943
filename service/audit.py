"""The audit log: one row per analysed file and per refused request, written before the answer.

Rows carry the time, request id, key, client address, method and path, HTTP status,
outcome (``ok`` or the problem code), file name, sha256, size, audio duration,
processing time, verdict, score, model id, the analysis or job id and the worker
(``host:pid``) that answered. If a row cannot be written, the caller gets a 503 instead
of an answer without a record.

Requests that score or queue audio are written ahead: before the upload is read, a row
with outcome ``received`` (HTTP status 0: no answer yet) is committed, and the answer
completes that same row. When a worker process dies with requests in flight (killed, out
of memory, or stopped by gunicorn's ``--timeout``), the master process gives its rows
the outcome ``interrupted`` or ``timed_out`` (status 0: no answer was sent); rows left
by a server that stopped altogether are given ``interrupted`` when the next one starts.
So the audit log holds a row for every such request a worker began, answered or not.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Response, g, request

from .problems import error_response
from .store import AUDIT_COLUMNS, RECEIVED, StoreError, iso

if TYPE_CHECKING:
    from . import Service


NO_ANSWER = 0
"""HTTP status of an audit row whose request has not been (or was never) answered."""

INTERRUPTED = "interrupted"
"""Outcome of a request whose worker process died before answering it."""

TIMED_OUT = "timed_out"
"""Outcome of a request whose worker gunicorn stopped for running past ``--timeout``."""


def worker_name() -> str:
    """The running process as the audit log names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def request_row(**values: Any) -> dict[str, Any]:
    """An audit row for the current request, with ``values`` filled in.

    While the request has a ``received`` row (:func:`open_request`), the row carries its
    ``id``, so that writing it completes that row instead of adding one.
    """
    key = g.get("key")
    row: dict[str, Any] = {
        "time": time.time(),
        "request_id": g.get("request_id"),
        "key_id": key.id if key else None,
        "key_name": key.name if key else None,
        "client_addr": request.remote_addr,
        "method": request.method,
        "path": request.path[:500],
        "user_name": g.user["name"] if g.get("user") else None,
        "worker": worker_name(),
    }
    if g.get("audit_id") is not None:
        row["id"] = g.audit_id
    row.update(values)
    return row


def open_request(svc: Service, **values: Any) -> None:
    """Commit this request's ``received`` audit row before its work starts (write-ahead).

    The next row written for the request (:func:`request_row`, then :func:`written`)
    completes it. ``values`` adds what is known already (``size_bytes``, a file's name).
    """
    g.audit_id = None
    row = request_row(status=NO_ANSWER, outcome=RECEIVED, model_id=svc.detector.model_id)
    row.update(values)
    g.audit_id = svc.store.open_audit(row)


def written(row: dict[str, Any]) -> None:
    """Note that ``row`` was stored: the request's ``received`` row, if it was that, is done."""
    if row.get("id") is not None and row["id"] == g.get("audit_id"):
        g.audit_id = None


def record(svc: Service, row: dict[str, Any]) -> None:
    """Store ``row`` (committed before returning) and note it as written."""
    svc.store.write_audit([row])
    written(row)


def audit_refusal(svc: Service, response: Response) -> Response:
    """Write the audit row of a refused request, or complete the request's ``received`` row.

    Does nothing when the request's row was written already.
    """
    if g.get("audited") and g.get("audit_id") is None:
        return response
    g.audited = True
    failed = response.status_code >= 400
    row = request_row(
        status=response.status_code,
        outcome=(g.get("error_code") or f"http_{response.status_code}") if failed else "ok",
        # A received row of one file already holds that file's size.
        size_bytes=request.content_length if g.get("audit_id") is None else None,
        model_id=svc.detector.model_id,
    )
    try:
        record(svc, row)
    except StoreError as exc:
        g.error_code = exc.code
        return error_response(exc)
    return response


def export(rows: Iterable[dict[str, Any]], fmt: str, out: io.TextIOBase) -> int:
    """Write audit rows as CSV or JSON (an array) to ``out``; returns the row count."""
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=["time_iso", *AUDIT_COLUMNS], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({"time_iso": iso(row["time"]), **row})
            n += 1
        return n
    if fmt == "json":
        out.write("[")
        for row in rows:
            out.write(
                ("," if n else "") + "\n  " + json.dumps({"time_iso": iso(row["time"]), **row})
            )
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
    raise ValueError(f"unknown export format {fmt!r}; expected csv or json")
