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

The hash chain
--------------
The log is tamper-evident: each complete row carries its place in one hash chain per
store, ``seq`` (1, 2, 3, ...), the hash of the row before it, ``prev_hash`` (64 zeros for
the first), and its own ``hash``. A row is chained once, when it is complete: a row
appended whole is chained as it is written; a write-ahead ``received`` row is not
chained while its request is in flight, and is chained, with the next sequence number,
by the write that completes it (the answer, or ``interrupted`` / ``timed_out``). So
the chain holds every row's final content, in the order the rows were completed, and a
chained row is never changed again: an answer for a row that is chained already is
appended as a row of its own. Appends are serialised through the chain's head (the
``audit_chain`` table's one row, written first in each appending transaction: the
database's write lock on SQLite, the row's lock on PostgreSQL), so several worker
processes keep one unbroken chain.

A row's hash is the SHA-256 (lower-case hex) of its canonical text: the JSON object of
its columns except ``hash``, leaving out those that are null, with keys sorted, no
spaces (``separators=(",", ":")``), non-ASCII characters kept as UTF-8, and the float
columns (``time``, ``duration_s``, ``processing_ms``, ``score``) written as text with
six decimals (``format(x, ".6f")``); ``seq`` and ``prev_hash`` are among the columns
hashed. :func:`verify` recomputes every hash and link; ``voicecheck audit export
--format jsonl`` writes each chained row with its ``seq``, ``prev_hash`` and ``hash``,
so that anyone can recompute them from the export alone::

    prev = None
    for line in open("audit.jsonl", encoding="utf-8"):
        entry = json.loads(line)
        doc = {k: v for k, v in entry["row"].items() if v is not None}
        for k in ("time", "duration_s", "processing_ms", "score"):
            if k in doc:
                doc[k] = format(doc[k], ".6f")
        doc.update(seq=entry["seq"], prev_hash=entry["prev_hash"])
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == entry["hash"]
        assert prev is None or entry["prev_hash"] == prev
        prev = entry["hash"]

Rows written before the store had a chain (``id`` up to the head's ``first_id``) stay
unchained; :func:`verify` counts them apart and does not call them tampering. Deleting
rows at the end of the log is found by comparing the last row with the chain's head;
whoever can rewrite the head and every row's hash can rewrite history, which is why an
export (or the hashes printed in an evidence report) kept elsewhere is the anchor.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Response, g, request

from .problems import error_response
from .store import (
    AUDIT_COLUMNS,
    CHAIN_COLUMNS,
    GENESIS,
    RECEIVED,
    StoreError,
    chain_hash,
    iso,
)

if TYPE_CHECKING:
    from . import Service
    from .store import Store


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


def chain_entry(row: dict[str, Any]) -> dict[str, Any]:
    """An exported chain entry: ``seq``, ``prev_hash``, ``hash`` and the ``row`` hashed."""
    return {
        "seq": row["seq"],
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
        "time_iso": iso(row["time"]),
        "row": {k: row.get(k) for k in AUDIT_COLUMNS if k not in CHAIN_COLUMNS},
    }


def export_chain(rows: Iterable[dict[str, Any]], out: io.TextIOBase) -> int:
    """Write chained audit rows as JSON lines (one :func:`chain_entry` a line); the count."""
    n = 0
    for row in rows:
        out.write(json.dumps(chain_entry(row), ensure_ascii=False, sort_keys=True) + "\n")
        n += 1
    return n


@dataclass
class ChainReport:
    """What :func:`verify` found.

    ``problem`` is None on an intact chain; otherwise it says what is wrong with the first
    bad row, named by ``bad_id`` (the row's id, None when the row is gone) and ``bad_seq``;
    ``kind`` is ``content_changed``, ``row_missing``, ``order_changed`` or ``unchained``.
    """

    checked: int = 0
    last_seq: int = 0
    legacy: int = 0
    in_flight: int = 0
    problem: str | None = None
    kind: str | None = None
    bad_id: int | None = None
    bad_seq: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no row was found changed, missing, out of order or outside the chain."""
        return self.problem is None

    def summary(self) -> str:
        """One line for a person."""
        if not self.ok:
            return f"audit log NOT intact: {self.problem}"
        text = f"audit log intact: {self.checked} chained row(s), sequence 1-{self.last_seq}"
        if not self.checked:
            text = "audit log intact: no chained rows yet"
        if self.legacy:
            text += (
                f"; {self.legacy} older row(s) written before the chain began are unchained "
                "and cannot be checked"
            )
        if self.in_flight:
            text += f"; {self.in_flight} row(s) still in flight, chained when answered"
        return text


def _bad(report: ChainReport, kind: str, row: dict[str, Any] | None, seq: int, text: str) -> None:
    report.kind, report.bad_seq, report.problem = kind, seq, text
    report.bad_id = row["id"] if row is not None else None


def _name(row: dict[str, Any]) -> str:
    return f"row id {row['id']} (sequence {row['seq']})"


def verify(store: Store) -> ChainReport:
    """Check the audit log's hash chain: every hash, every link, no gap, the head.

    Stops at the first bad row. A row whose recomputed hash differs was changed; a
    sequence number skipped means a row is missing; a row whose ``prev_hash`` is the hash
    of a row elsewhere in the chain was moved. Complete rows outside the chain that are
    newer than it are reported too (added behind the service's back).
    """
    report = ChainReport()
    head = store.audit_chain_head()
    expected, prev, before = 1, GENESIS, None
    for row in store.chained_audit_rows():
        seq = int(row["seq"])
        if seq < expected:  # cannot happen while the unique index on seq stands
            _bad(report, "order_changed", row, seq, f"{_name(row)} repeats sequence {seq}")
            return report
        if seq > expected:
            gap = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
            origin = _name(before) if before else "its start"
            _bad(
                report,
                "row_missing",
                None,
                expected,
                f"sequence {gap} is missing (deleted?): the chain jumps from {origin} "
                f"to {_name(row)}",
            )
            return report
        if row["prev_hash"] != prev:
            moved = store.audit_row_by_hash(row["prev_hash"]) if row["prev_hash"] else None
            if moved is not None and moved["id"] != (before or {}).get("id"):
                _bad(
                    report,
                    "order_changed",
                    row,
                    seq,
                    f"order changed: {_name(row)} was chained after {_name(moved)}, but "
                    f"now stands after "
                    f"{_name(before) if before else 'the start of the chain'}",
                )
            elif before is not None and chain_hash(row, seq, row["prev_hash"]) == row["hash"]:
                _bad(
                    report,
                    "content_changed",
                    before,
                    before["seq"],
                    f"content changed: {_name(before)} is not the row that {_name(row)} "
                    "was chained after (its hash differs from the one recorded there)",
                )
            else:
                _bad(
                    report,
                    "content_changed",
                    row,
                    seq,
                    f"content changed: {_name(row)} no longer matches its chain link",
                )
            return report
        if chain_hash(row, seq, prev) != row["hash"]:
            _bad(
                report,
                "content_changed",
                row,
                seq,
                f"content changed: {_name(row)} no longer matches its hash",
            )
            return report
        report.checked += 1
        report.last_seq = seq
        prev, before, expected = row["hash"], row, expected + 1
    if int(head["seq"]) > report.last_seq:
        first = report.last_seq + 1
        gap = f"{first}" if first == head["seq"] else f"{first}-{head['seq']}"
        _bad(
            report,
            "row_missing",
            None,
            first,
            f"sequence {gap} is missing (deleted?): the chain's head is at {head['seq']} but "
            f"its last row is sequence {report.last_seq}",
        )
        return report
    if head["hash"] != prev:
        _bad(
            report,
            "content_changed",
            before,
            report.last_seq,
            f"content changed: the chain's head does not match its last row"
            f"{f', {_name(before)}' if before else ''}",
        )
        return report
    unchained = store.unchained_audit(int(head["first_id"]))
    report.legacy, report.in_flight = unchained["legacy"], unchained["in_flight"]
    if unchained["outside"]:
        ids = ", ".join(str(i) for i in unchained["outside"])
        more = unchained["outside_count"] - len(unchained["outside"])
        row_id = unchained["outside"][0]
        report.kind, report.bad_id, report.bad_seq = "unchained", row_id, None
        report.problem = (
            f"row id {row_id} is complete but not in the chain (added or altered outside "
            f"voicecheck): rows {ids}{f' and {more} more' if more > 0 else ''}"
        )
    return report
