"""A console case's lifecycle: deletion, legal hold and export as one ZIP.

Routes on the console's blueprint (so they share its sessions, CSRF tokens, page
headers and error pages):

- ``GET /cases/<id>/delete`` asks to confirm; ``POST`` deletes: the retained recording and
  every render made from it (timeline, playable WAV) are removed from disk, and the
  case's row keeps only its SHA-256, verdict and score, with who deleted it and when.
  The file name, result, notes and reports are gone; the audit log keeps its rows.
- ``POST /cases/<id>/legal-hold`` puts a case under legal hold or releases it. A held
  case cannot be deleted, and the retention purge (``retention_days``) keeps its audio.
- ``GET /cases/<id>/export.zip``: the original file (if kept), the JSON and PDF
  reports, the timeline, the case's chained audit rows as JSON lines (as
  ``voicecheck audit export --format jsonl`` writes them) and a ``manifest.json`` with
  the SHA-256 of each part.

The official who made a case, or an admin, may delete it and set or clear its hold
(viewers may do neither); whoever can open a case may export it. Each action
is written to the audit log.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Response, g, redirect, render_template, request, send_file, url_for

from voicecheck import __version__
from voicecheck.errors import VoiceCheckError

from . import service
from .audit import export_chain, record, request_row
from .console import (
    _case_row,
    _check_csrf,
    _download_name,
    _timeline_png,
    bp,
    report_json_bytes,
    report_pdf_bytes,
    signed_in,
)
from .problems import RequestError
from .store import iso

EXPORT_SCHEMA = "voicecheck.case-export/1"
"""The ``schema`` of an export's ``manifest.json``."""

CASE_DELETED = "case_deleted"
LEGAL_HOLD_SET = "legal_hold_set"
LEGAL_HOLD_CLEARED = "legal_hold_cleared"
CASE_EXPORT = "case_export"
"""Audit outcomes of the lifecycle's actions."""


class NotAllowedError(VoiceCheckError):
    """The signed-in user may not change this case."""

    status = 403
    code = "not_allowed"
    title = "Not allowed"


class LegalHoldError(VoiceCheckError):
    """The case is under legal hold, so it cannot be deleted."""

    status = 409
    code = "legal_hold"
    title = "Under legal hold"


# --- who may do what ------------------------------------------------------------------


def _role() -> str | None:
    """The signed-in user's role (``admin``, ``official``, ``viewer``), None if unknown."""
    user = g.get("user") or {}
    if user.get("role"):
        return user["role"]
    row = service().store.get_user(user_id=user.get("id")) if user.get("id") else None
    return (row or {}).get("role")


def may_manage(row: dict[str, Any]) -> bool:
    """Whether the signed-in user may delete ``row``'s case and set or clear its hold.

    Admins may for every case; others for the cases they made, unless they are viewers.
    """
    role = _role()
    if role == "admin":
        return True
    return role != "viewer" and row.get("user_id") == (g.get("user") or {}).get("id")


def _require_manage(row: dict[str, Any], action: str) -> None:
    if not may_manage(row):
        raise NotAllowedError(f"only the official who made this case, or an admin, may {action} it")


def case_controls(row: dict[str, Any]) -> dict[str, Any]:
    """What the case page shows of the case's lifecycle: hold state and allowed actions."""
    held = row.get("legal_hold_at") is not None
    manage = may_manage(row)
    return {
        "held": held,
        "held_at": iso(row.get("legal_hold_at")),
        "held_by": row.get("legal_hold_by"),
        "may_hold": manage,
        "may_delete": manage and not held,
    }


def deleted_page(row: dict[str, Any]) -> str:
    """The page of a deleted case: that it was deleted, when and by whom, nothing else."""
    return render_template(
        "console/case_deleted.html",
        case={
            "id": row["id"],
            "deleted_at": iso(row["deleted_at"]),
            "deleted_by": row.get("deleted_by"),
            "sha256": row["sha256"],
            "verdict": row.get("verdict"),
            "score": row.get("score"),
        },
    )


def _audit(outcome: str, row: dict[str, Any], *, status: int, **values: Any) -> dict[str, Any]:
    return request_row(
        status=status,
        outcome=outcome,
        analysis_id=row["id"],
        sha256=row["sha256"],
        **values,
    )


# --- deletion -------------------------------------------------------------------------


def remove_files(audio_path: str, analysis_id: str, *, audio_too: bool) -> int:
    """Delete a case's files on disk; returns how many were removed.

    Its own timeline (``<audio>.<id>.png``) always; with ``audio_too`` (no other
    analysis refers to the recording) the audio and every render beside it (``<audio>.*``).
    """
    kept = Path(audio_path)
    targets = [Path(f"{kept}.{analysis_id}.png")]
    if audio_too:
        targets = [kept, *kept.parent.glob(glob.escape(kept.name) + ".*")]
    removed = 0
    for path in targets:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


@bp.get("/cases/<analysis_id>/delete")
@signed_in
def confirm_delete(analysis_id: str) -> str:
    """Ask the official to confirm deleting a case."""
    row = _case_row(analysis_id)
    _require_manage(row, "delete")
    if row.get("legal_hold_at") is not None:
        raise LegalHoldError(_held_message(row))
    return render_template(
        "console/case_delete.html",
        case={
            "id": row["id"],
            "filename": row["filename"],
            "sha256": row["sha256"],
            "created_at": iso(row["created_at"]),
        },
    )


def _held_message(row: dict[str, Any]) -> str:
    by = f" by {row['legal_hold_by']}" if row.get("legal_hold_by") else ""
    return (
        f"this case has been under legal hold since {iso(row['legal_hold_at'])}{by}, so it "
        "cannot be deleted; the hold must be cleared first"
    )


@bp.post("/cases/<analysis_id>/delete")
@signed_in
def delete_case(analysis_id: str) -> Response:
    """Delete a case: its audio and renders from disk, its contents from the store."""
    svc = service()
    _check_csrf()
    row = _case_row(analysis_id)
    _require_manage(row, "delete")
    if row.get("legal_hold_at") is not None:
        raise LegalHoldError(_held_message(row))
    audio_path = row.get("audio_path")
    outcome, paths = svc.store.delete_case(
        row["id"],
        by=g.user["name"],
        when=time.time(),
        audit_row=_audit(
            CASE_DELETED, row, status=303, verdict=row.get("verdict"), score=row.get("score")
        ),
    )
    if outcome == "held":
        raise LegalHoldError(_held_message(svc.store.get_analysis(row["id"]) or row))
    if outcome == "deleted" and audio_path:
        remove_files(audio_path, row["id"], audio_too=audio_path in paths)
    return redirect(url_for("console.case", analysis_id=row["id"]), code=303)


# --- legal hold -----------------------------------------------------------------------


@bp.post("/cases/<analysis_id>/legal-hold")
@signed_in
def legal_hold(analysis_id: str) -> Response:
    """Put a case under legal hold (``hold=on``) or release it (``hold=off``)."""
    svc = service()
    _check_csrf()
    row = _case_row(analysis_id)
    choice = request.form.get("hold")
    if choice not in ("on", "off"):
        raise RequestError("say whether to set the legal hold (hold=on) or clear it (hold=off)")
    _require_manage(row, "set or clear the legal hold of")
    held = choice == "on"
    outcome = LEGAL_HOLD_SET if held else LEGAL_HOLD_CLEARED
    if not svc.store.set_legal_hold(
        row["id"],
        held=held,
        by=g.user["name"],
        when=time.time(),
        audit_row=_audit(outcome, row, status=303, filename=row["filename"]),
    ):
        _case_row(analysis_id)  # deleted meanwhile: says so
    return redirect(url_for("console.case", analysis_id=row["id"]) + "#lifecycle", code=303)


# --- export ---------------------------------------------------------------------------


def _zip_time(t: float) -> tuple[int, int, int, int, int, int]:
    d = datetime.fromtimestamp(t, UTC)
    return (max(d.year, 1980), d.month, d.day, d.hour, d.minute, d.second)


def _original_name(row: dict[str, Any]) -> str:
    name = Path(row.get("filename") or "").name.strip().replace("\\", "_")
    return "original/" + (name or row["sha256"])


def export_parts(row: dict[str, Any], generated: float) -> list[tuple[str, bytes | Path]]:
    """The files of a case's export, in their order in the ZIP (manifest not included)."""
    stamp = iso(generated)
    parts: list[tuple[str, bytes | Path]] = [
        ("report.json", report_json_bytes(row, stamp)),
        ("report.pdf", report_pdf_bytes(row, stamp)),
    ]
    png = _timeline_png(row)
    if png is not None:
        parts.append(("timeline.png", png))
    out = io.StringIO()
    export_chain((r for r in service().store.case_audit_rows(row["id"]) if r.get("hash")), out)
    parts.append(("audit.jsonl", out.getvalue().encode("utf-8")))
    audio = row.get("audio_path")
    if audio and Path(audio).is_file():
        parts.append((_original_name(row), Path(audio)))
    return parts


def _digest(part: bytes | Path) -> tuple[str, int]:
    h = hashlib.sha256()
    if isinstance(part, bytes):
        h.update(part)
        return h.hexdigest(), len(part)
    size = 0
    with part.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def write_export(row: dict[str, Any], out: Any, *, generated: float) -> dict[str, Any]:
    """Write a case's export ZIP to the binary file ``out``; returns its manifest.

    ``manifest.json`` comes first, then the parts in a fixed order; every entry carries
    the generation time, so the same parts give the same ZIP.
    """
    parts = export_parts(row, generated)
    files = []
    for name, part in parts:
        digest, size = _digest(part)
        files.append({"name": name, "sha256": digest, "size_bytes": size})
    manifest = {
        "schema": EXPORT_SCHEMA,
        "case_id": row["id"],
        "generated_at": iso(generated),
        "voicecheck_version": __version__,
        "recording_sha256": row["sha256"],
        "files": files,
    }
    when = _zip_time(generated)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        entries = [("manifest.json", json.dumps(manifest, indent=2).encode()), *parts]
        for name, part in entries:
            info = zipfile.ZipInfo(name, date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            if isinstance(part, bytes):
                zf.writestr(info, part)
            else:
                with part.open("rb") as src, zf.open(info, "w") as dst:
                    for block in iter(lambda s=src: s.read(1 << 20), b""):
                        dst.write(block)
    return manifest


@bp.get("/cases/<analysis_id>/export.zip")
@signed_in
def export_case(analysis_id: str) -> Response:
    """The case as one ZIP: recording, reports, timeline, audit rows and a manifest."""
    row = _case_row(analysis_id)
    out = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # send_file closes it
    write_export(row, out, generated=time.time())
    record(service(), _audit(CASE_EXPORT, row, status=200, filename=row["filename"]))
    out.seek(0)
    return send_file(
        out,
        mimetype="application/zip",
        as_attachment=True,
        download_name=_download_name(row, ".zip"),
    )
