"""The audit log: one row per analysed file and per refused request, written before the answer.

Rows carry the time, request id, key, client address, method and path, HTTP status,
outcome (``ok`` or the problem code), file name, sha256, size, audio duration,
processing time, verdict, score, model id and the analysis or job id. If a row cannot
be written, the caller gets a 503 instead of an answer without a record.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Response, g, request

from .problems import error_response
from .store import AUDIT_COLUMNS, StoreError, iso

if TYPE_CHECKING:
    from . import Service


def request_row(**values: Any) -> dict[str, Any]:
    """An audit row for the current request, with ``values`` filled in."""
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
    }
    row.update(values)
    return row


def audit_refusal(svc: Service, response: Response) -> Response:
    """Write the audit row of a refused request (unless one was written already)."""
    if g.get("audited"):
        return response
    g.audited = True
    row = request_row(
        status=response.status_code,
        outcome=g.get("error_code") or f"http_{response.status_code}",
        size_bytes=request.content_length,
        model_id=svc.detector.model_id,
    )
    try:
        svc.store.write_audit([row])
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
