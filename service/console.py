"""The web console for election officials, at ``/``.

Officials sign in (:mod:`.accounts`), upload recorded calls, read each call's result in
plain language, download an evidence report (PDF and JSON) and keep notes on a case.
Every page, style sheet, script and image comes from this application; the pages carry a
Content-Security-Policy that allows nothing else.

Every form and upload carries the session's CSRF token (a hidden field, or the
``X-CSRF-Token`` header from the upload script); the sign-in form, before there is a
session, uses a double-submit cookie. Uploads are scored by the same code and limits as
``POST /v1/analyze`` and recorded in the same store, with the official's name in the
audit log.
"""

from __future__ import annotations

import functools
import io
import json
import math
import secrets
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import soundfile as sf
from flask import (
    Blueprint,
    Response,
    abort,
    g,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from werkzeug.exceptions import HTTPException

from voicecheck import __version__
from voicecheck.audio import load_audio
from voicecheck.errors import VoiceCheckError
from voicecheck.explain import meaning_text, percent, promise_text, score_rates, verdict_text

from . import Service, service
from .accounts import (
    SIGN_IN_FAILED,
    SignInError,
    address_wait_s,
    authenticate,
    end_session,
    role_of,
    same_token,
    session_for,
    start_session,
)
from .api import Part, Upload, analyze_and_store, clean_filename, read_upload, retain
from .audit import record, request_row
from .evidence import evidence_pdf, timeline_png, verdict_label
from .problems import RequestError
from .store import StoreError, iso

bp = Blueprint("console", __name__, template_folder="templates")

SESSION_COOKIE = "voicecheck_session"
PRE_CSRF_COOKIE = "voicecheck_signin"
PAGE_SIZE = 25
MAX_NOTE_CHARS = 5000
VERDICTS = ("likely_cloned", "inconclusive", "likely_human")

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""Console pages load their own script, style sheet, images and audio, and nothing else."""


# --- sessions and CSRF ------------------------------------------------------------------


def _secure_cookie(svc: Service) -> bool:
    mode = svc.settings.cookie_secure
    return mode == "always" or (mode == "auto" and request.is_secure)


def signed_in(view: Callable) -> Callable:
    """Send visitors without a live session to the sign-in page (401 for scripts)."""

    @functools.wraps(view)
    def inner(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            if _wants_json():
                raise ConsoleAuthError("your session has ended; sign in again")
            target = request.full_path if request.query_string else request.path
            return redirect(url_for("console.sign_in", next=target))
        return view(*args, **kwargs)

    return inner


class ConsoleAuthError(VoiceCheckError):
    """A console request without a live session."""

    status = 401
    code = "signed_out"
    title = "Not signed in"


class CsrfError(VoiceCheckError):
    """A console form or upload without the session's CSRF token."""

    status = 403
    code = "csrf_failed"
    title = "Form expired"


class ForbiddenError(VoiceCheckError):
    """A console request that the signed-in user's role does not allow."""

    status = 403
    code = "forbidden"
    title = "Not allowed"


def admin_only(view: Callable) -> Callable:
    """Let only signed-in admins through (403 for everyone else)."""

    @functools.wraps(view)
    def inner(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is not None and g.user["role"] != "admin":
            raise ForbiddenError("this page is for administrators")
        return view(*args, **kwargs)

    return signed_in(inner)


@bp.before_request
def _viewers_read_only() -> None:
    """Viewers read cases and reports; every other method than GET/HEAD is refused."""
    user = g.get("user")
    if (
        user is not None
        and user["role"] == "viewer"
        and request.method not in ("GET", "HEAD", "OPTIONS")
        and request.endpoint
        not in ("console.sign_out", "console.sign_in", "console.set_password_page")
    ):
        raise ForbiddenError("your account can read cases and reports, but not change them")


def _check_csrf() -> None:
    presented = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
    if not same_token(g.session["csrf"], presented):
        raise CsrfError(
            "this form is out of date or came from another site; reload the page and try again"
        )


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" or request.headers.get("X-Requested-With") == "fetch"


def _is_page_request() -> bool:
    """Whether an error here should be a page: a console page, or a browser asking for HTML."""
    if _wants_json():
        return False
    if request.blueprint == "console":
        return True
    return any(value == "text/html" for value, _q in request.accept_mimetypes)


def _safe_next(target: str | None) -> str:
    """A local path to go to after sign-in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("console.upload_page")
    return target


@bp.before_app_request
def _load_session() -> None:
    g.user = None
    g.session = None
    if request.path.startswith("/v1/"):
        return
    g.wants_html = _is_page_request()
    if request.blueprint != "console" and not g.wants_html:
        return  # static files, health checks, metrics: no session to look up
    svc = service()
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return
    try:
        row = session_for(svc.store, token, svc.settings)
    except StoreError:
        return
    if row is not None:
        g.session = row
        g.user = {"id": row["user_id"], "name": row["user_name"], "role": role_of(row)}


@bp.after_app_request
def _page_headers(response: Response) -> Response:
    if request.path.startswith("/v1/") or request.blueprint not in ("console", None):
        return response
    if request.blueprint is None and not request.path.startswith("/static/"):
        return response
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.blueprint == "console":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.app_context_processor
def _page_globals() -> dict[str, Any]:
    return {
        "user": g.get("user"),
        "csrf_token": g.session["csrf"] if g.get("session") else "",
        "app_version": __version__,
        "verdict_label": verdict_label,
        "pct": percent,
    }


def render_error(status: int, title: str, detail: str) -> Response:
    """A console error page (the pages' counterpart of problem+json)."""
    body = render_template("console/error.html", status=status, title=title, detail=detail)
    response = Response(body, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


# --- sign-in ----------------------------------------------------------------------------


@bp.get("/")
def home() -> Response:
    """Signed-in officials start at the upload page; others at the sign-in page."""
    if g.get("user") is None:
        return redirect(url_for("console.sign_in"))
    if g.user["role"] == "viewer":
        return redirect(url_for("console.cases"))
    return redirect(url_for("console.upload_page"))


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Response:
    """The sign-in form, and its submission."""
    svc = service()
    next_path = _safe_next(request.values.get("next"))
    if g.get("user") is not None and request.method == "GET":
        return redirect(next_path)
    error = None
    status = 200
    name = ""
    if request.method == "POST":
        name = (request.form.get("name") or "").strip()
        wait_s = address_wait_s(svc.store, request.remote_addr, svc.settings)
        if wait_s > 0:
            return _throttled(svc, name, wait_s)
        if not same_token(request.cookies.get(PRE_CSRF_COOKIE), request.form.get("csrf_token")):
            error = "The sign-in form had expired. Please try again."
            status = 403
        else:
            try:
                user = authenticate(
                    svc.store, name, request.form.get("password") or "", svc.settings
                )
            except SignInError as exc:
                error = exc.message[0].upper() + exc.message[1:] + "."
                status = 401
                _audit_console(SIGN_IN_FAILED, status=401, user_name=name or None)
            else:
                token = start_session(
                    svc.store,
                    user,
                    svc.settings,
                    client_addr=request.remote_addr,
                    user_agent=(request.user_agent.string or "")[:300],
                )
                g.user = {"id": user["id"], "name": user["name"], "role": role_of(user)}
                _audit_console("sign_in", status=303)
                response = redirect(next_path, code=303)
                response.set_cookie(
                    SESSION_COOKIE,
                    token,
                    max_age=int(svc.settings.session_max_hours * 3600),
                    httponly=True,
                    samesite="Lax",
                    secure=_secure_cookie(svc),
                    path="/",
                )
                response.delete_cookie(PRE_CSRF_COOKIE, path="/sign-in")
                return response
    pre = secrets.token_urlsafe(32)
    body = render_template(
        "console/sign_in.html", error=error, name=name, next_path=next_path, pre_csrf=pre
    )
    response = Response(body, status=status, mimetype="text/html")
    response.set_cookie(
        PRE_CSRF_COOKIE,
        pre,
        max_age=3600,
        httponly=True,
        samesite="Strict",
        secure=_secure_cookie(svc),
        path="/sign-in",
    )
    return response


def _throttled(svc: Service, name: str, wait_s: float) -> Response:
    """The 429 page for an address with too many failed sign-ins (no password is checked)."""
    _audit_console("sign_in_throttled", status=429, user_name=name or None)
    limit = svc.settings.sign_in_address_max_failures
    window = svc.settings.sign_in_address_window_minutes
    seconds = max(1, math.ceil(wait_s))
    minutes = math.ceil(seconds / 60)
    wait = (
        f"{seconds} second{'s' * (seconds != 1)}"
        if seconds < 60
        else f"{minutes} minute{'s' * (minutes != 1)}"
    )
    response = render_error(
        429,
        "Too many failed sign-ins",
        f"There were {limit} failed sign-in{'s' * (limit != 1)} from your network address in "
        f"the last {window:g} minute{'s' * (window != 1)}, so signing in from it is paused. "
        f"Please try again in {wait}. This holds for the address, not for any account.",
    )
    response.headers["Retry-After"] = str(seconds)
    return response


@bp.post("/sign-out")
def sign_out() -> Response:
    """End the session (the form carries the CSRF token)."""
    svc = service()
    if g.get("session") is not None:
        _check_csrf()
        _audit_console("sign_out", status=303)
    end_session(svc.store, request.cookies.get(SESSION_COOKIE))
    response = redirect(url_for("console.sign_in", signed_out=1), code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _audit_console(outcome: str, *, status: int, **values: Any) -> None:
    record(service(), request_row(status=status, outcome=outcome, **values))


# --- upload -----------------------------------------------------------------------------


@bp.get("/upload")
@signed_in
def upload_page() -> Response | str:
    """The upload page: drag-and-drop or a file picker, several files at once."""
    if g.user["role"] == "viewer":
        return redirect(url_for("console.cases"))  # viewers cannot upload
    svc = service()
    return render_template(
        "console/upload.html",
        max_mb=svc.settings.max_upload_mb,
        max_minutes=svc.settings.max_sync_duration_s / 60,
        accept=ACCEPT,
    )


ACCEPT = (
    ".wav,.flac,.ogg,.oga,.opus,.mp3,.m4a,.mp4,.aac,.amr,.awb,.3gp,.webm,.au,.aiff,.aif,"
    ".caf,.mka,.wma,audio/*"
)


def _analyse(svc: Service, upload: Upload) -> tuple[dict[str, Any] | None, VoiceCheckError | None]:
    """Score one upload as the signed-in official; the analysis and audit row are stored."""

    def finish(row: dict[str, Any]) -> None:
        body = json.loads(row["result"])
        card = svc.detector.card
        metrics = card.get("metrics") or {}
        body["rates"] = score_rates(body["score"], card)
        body["promise"] = promise_text(card)
        body["model_card"] = {
            "id": card.get("model_id"),
            "name": card.get("name"),
            "created": card.get("created"),
            "eer": metrics.get("pooled", {}).get("eer"),
            "protocol": metrics.get("protocol"),
        }
        row["result"] = json.dumps(body)
        row["user_id"] = g.user["id"]
        if row["audio_path"] is None and svc.settings.console_keep_audio:
            row["audio_path"] = retain(svc, upload, always=True)

    return analyze_and_store(svc, upload, explain=True, finish=finish)


def _console_uploads(svc: Service) -> list[Upload]:
    files = request.files.getlist("file")
    files = [f for f in files if f.filename]
    if not files:
        raise RequestError("choose at least one recording to upload")
    if len(files) > svc.settings.max_batch_files:
        raise RequestError(
            f"{len(files)} files were sent at once; at most {svc.settings.max_batch_files} "
            "are accepted (upload the rest in another round)"
        )
    return [
        read_upload(svc, Part(f.stream, clean_filename(f.filename), f.mimetype or None))
        for f in files
    ]


@bp.post("/upload")
@signed_in
def upload() -> Response | str:
    """Score uploaded files: JSON for the page's script, a results page without it."""
    svc = service()
    _check_csrf()
    if request.mimetype != "multipart/form-data":
        raise RequestError("send the recordings as a form upload (multipart/form-data)")
    files = _console_uploads(svc)
    outcomes = []
    for upload_ in files:
        row, error = _analyse(svc, upload_)
        if error is not None:
            outcomes.append({"filename": upload_.filename, "error": error})
        else:
            assert row is not None
            outcomes.append({"filename": upload_.filename, "row": row})
    if _wants_json():
        if len(outcomes) == 1 and "error" in outcomes[0]:
            raise outcomes[0]["error"]
        return Response(
            json.dumps({"results": [_upload_json(o) for o in outcomes]}),
            mimetype="application/json",
        )
    if len(outcomes) == 1 and "row" in outcomes[0]:
        return redirect(url_for("console.case", analysis_id=outcomes[0]["row"]["id"]), code=303)
    status = 200 if any("row" in o for o in outcomes) else 422
    return Response(render_template("console/uploaded.html", outcomes=outcomes), status=status)


def _upload_json(outcome: dict[str, Any]) -> dict[str, Any]:
    if "error" in outcome:
        return {"filename": outcome["filename"], "error": outcome["error"].to_problem()}
    row = outcome["row"]
    return {
        "filename": row["filename"],
        "id": row["id"],
        "url": url_for("console.case", analysis_id=row["id"]),
        "verdict": row["verdict"],
        "verdict_label": verdict_label(row["verdict"]),
        "score": row["score"],
    }


# --- cases ------------------------------------------------------------------------------


class CaseDeletedError(VoiceCheckError):
    """A request for the contents of a case that was deleted (only its record is left)."""

    status = 410
    code = "case_deleted"
    title = "Case deleted"


def _case_row(analysis_id: str, *, deleted_ok: bool = False) -> dict[str, Any]:
    row = service().store.get_analysis(analysis_id)
    if row is None or row.get("user_id") is None:
        abort(404)
    if row.get("deleted_at") is not None and not deleted_ok:
        raise CaseDeletedError(
            f"case {row['id']} was deleted on {iso(row['deleted_at'])}"
            f"{' by ' + row['deleted_by'] if row.get('deleted_by') else ''}; its recording, "
            "reports and notes are gone, only its hash and result are kept"
        )
    return row


def build_case(row: dict[str, Any]) -> dict[str, Any]:
    """Everything the result page, the PDF and the JSON report show about one case."""
    svc = service()
    result = json.loads(row["result"])
    user = svc.store.get_user(user_id=row["user_id"]) if row.get("user_id") else None
    texts = verdict_text(result["verdict"])
    rates, promise = result.get("rates"), result.get("promise")
    if result.get("model", {}).get("id") == svc.detector.model_id:
        if rates is None:
            rates = score_rates(result["score"], svc.detector.card)
        if promise is None:
            promise = promise_text(svc.detector.card)
    card = result.get("model_card") or {}
    return {
        "id": row["id"],
        "created_at": iso(row["created_at"]),
        "analysed_by": user["name"] if user else None,
        "filename": row["filename"],
        "sha256": row["sha256"],
        "size_bytes": row["size_bytes"],
        "verdict": result["verdict"],
        "verdict_label": verdict_label(result["verdict"]),
        "score": result["score"],
        "headline": texts["headline"],
        "advice": texts["advice"],
        "meaning": meaning_text(result["score"], rates),
        "promise": promise,
        "rates": rates,
        "thresholds": result["thresholds"],
        "channels": result.get("channels", []),
        "segments": result.get("segments", []),
        "cues": result.get("cues") or [],
        "audio": result.get("audio", {}),
        "model": {
            "id": result.get("model", {}).get("id"),
            "version": result.get("model", {}).get("version"),
            "name": card.get("name"),
            "created": card.get("created"),
            "eer": card.get("eer"),
            "protocol": card.get("protocol"),
        },
        "processing_ms": result.get("processing_ms"),
        "audio_kept": bool(row.get("audio_path")) and Path(row["audio_path"]).is_file(),
        "notes": [
            {"time": iso(n["time"]), "author": n["user_name"], "text": n["text"]}
            for n in svc.store.notes(row["id"])
        ],
        "same_recording": [
            {
                "id": r["id"],
                "created_at": iso(r["created_at"]),
                "filename": r["filename"],
                "analysed_by": r["user_name"],
                "verdict": r["verdict"],
                "score": r["score"],
            }
            for r in svc.store.same_recording(row["sha256"], exclude=row["id"])
        ],
        # the case's audit rows with their places in the hash chain, to check against
        # an export (`voicecheck audit export --format jsonl`)
        "audit": [
            {
                "seq": r["seq"],
                "id": r["id"],
                "time": iso(r["time"]),
                "method": r["method"],
                "path": r["path"],
                "status": r["status"],
                "outcome": r["outcome"],
                "prev_hash": r["prev_hash"],
                "hash": r["hash"],
            }
            for r in svc.store.case_audit_rows(row["id"])
        ],
    }


@bp.get("/cases")
@signed_in
def cases() -> str:
    """Case history: search by file name or sha256, verdict and date."""
    svc = service()
    q = (request.args.get("q") or "").strip()[:200]
    verdict = request.args.get("verdict") or ""
    mine = request.args.get("mine") == "1"
    errors = []
    if verdict and verdict not in VERDICTS:
        errors.append(f"Unknown verdict {verdict!r}.")
        verdict = ""
    since, since_text = _day(request.args.get("from"), "From", errors)
    until, until_text = _day(request.args.get("to"), "To", errors, end=True)
    try:
        page = max(1, int(request.args.get("page") or 1))
    except ValueError:
        page = 1
    rows, total = svc.store.find_cases(
        text=q or None,
        verdict=verdict or None,
        since=since,
        until=until,
        user_id=g.user["id"] if mine else None,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    pages = max(1, math.ceil(total / PAGE_SIZE))
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_template(
        "console/cases.html",
        rows=[{**r, "created_iso": iso(r["created_at"])} for r in rows],
        total=total,
        page=page,
        pages=pages,
        q=q,
        verdict=verdict,
        mine=mine,
        date_from=since_text,
        date_to=until_text,
        errors=errors,
        verdicts=VERDICTS,
        page_url=lambda n: url_for("console.cases") + "?" + urlencode({**args, "page": n}),
    )


def _day(text: str | None, label: str, errors: list[str], *, end: bool = False):
    if not text:
        return None, ""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        errors.append(f"{label} date {text!r} is not a date like 2026-11-03.")
        return None, ""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if end:
        start += timedelta(days=1)
    return start.timestamp(), day.isoformat()


@bp.get("/cases/<analysis_id>")
@signed_in
def case(analysis_id: str) -> str:
    """One call's result page (of a deleted case, the record of its deletion)."""
    from .cases import case_controls, deleted_page

    row = _case_row(analysis_id, deleted_ok=True)
    if row.get("deleted_at") is not None:
        return deleted_page(row)
    partner = []
    if g.user["role"] == "admin":
        partner = [
            {**r, "created_iso": iso(r["created_at"])}
            for r in service().store.partner_recording(row["sha256"])
        ]
    return render_template(
        "console/case.html",
        case=build_case(row),
        max_note=MAX_NOTE_CHARS,
        partner=partner,
        controls=case_controls(row),
    )


@bp.post("/cases/<analysis_id>/notes")
@signed_in
def add_note(analysis_id: str) -> Response:
    """Add a note to a case (kept with its author and time, and in the audit log)."""
    svc = service()
    _check_csrf()
    row = _case_row(analysis_id)
    text = (request.form.get("text") or "").strip()
    if not text:
        raise RequestError("the note is empty; write something before saving it")
    if len(text) > MAX_NOTE_CHARS:
        raise RequestError(
            f"the note has {len(text)} characters; at most {MAX_NOTE_CHARS} fit in one note"
        )
    now = time.time()
    svc.store.add_note(
        {
            "analysis_id": row["id"],
            "time": now,
            "user_id": g.user["id"],
            "user_name": g.user["name"],
            "text": text,
        },
        request_row(
            status=303,
            outcome="note_added",
            analysis_id=row["id"],
            filename=row["filename"],
            sha256=row["sha256"],
        ),
    )
    return redirect(url_for("console.case", analysis_id=row["id"]) + "#notes", code=303)


def _derived(row: dict[str, Any], suffix: str, make: Callable[[Any], bytes]) -> Path | None:
    """A file made once from a case's kept audio and kept beside it (``<audio>.<suffix>``).

    None when the audio was never kept or was deleted under ``retention_days``; the
    purge deletes these files with the audio they were made from.
    """
    path = row.get("audio_path")
    if not path or not Path(path).is_file():
        return None
    target = Path(f"{path}.{suffix}")
    if not target.is_file():
        audio = load_audio(Path(path), max_duration_s=service().settings.max_job_duration_s)
        tmp = Path(f"{target}.{secrets.token_hex(4)}.part")
        tmp.write_bytes(make(audio))
        tmp.replace(target)
    return target


def _timeline_png(row: dict[str, Any]) -> bytes | None:
    result = json.loads(row["result"])
    path = _derived(
        row,
        f"{row['id']}.png",
        lambda audio: timeline_png(
            audio.samples, audio.sr, result["channels"], result["thresholds"]
        ),
    )
    return path.read_bytes() if path is not None else None


def _playable_wav(audio: Any) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.asarray(audio.samples).T, audio.sr, format="WAV", subtype="PCM_16")
    return out.getvalue()


@bp.get("/cases/<analysis_id>/timeline.png")
@signed_in
def timeline(analysis_id: str) -> Response:
    """The timeline of segment scores over the spectrogram (drawn once, then kept)."""
    png = _timeline_png(_case_row(analysis_id))
    if png is None:
        abort(404, description="the audio of this case was not kept, so there is no timeline")
    return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})


@bp.get("/cases/<analysis_id>/audio.wav")
@signed_in
def audio(analysis_id: str) -> Response:
    """The call as 16-bit PCM WAV for the page's audio player (decoded once; ranges allowed)."""
    path = _derived(_case_row(analysis_id), "play.wav", _playable_wav)
    if path is None:
        abort(404, description="the audio of this case was not kept")
    return send_file(path, mimetype="audio/wav", conditional=True, max_age=0)


def _download_name(row: dict[str, Any], suffix: str) -> str:
    stem = Path(row["filename"] or "call").stem[:80] or "call"
    return f"voicecheck-{stem}-{row['id'][-8:]}{suffix}"


@bp.get("/cases/<analysis_id>/report.pdf")
@signed_in
def report_pdf(analysis_id: str) -> Response:
    """The evidence report as PDF."""
    row = _case_row(analysis_id)
    pdf = report_pdf_bytes(row, iso(time.time()))
    return _report(row, "report_pdf", pdf, "application/pdf", ".pdf")


def report_pdf_bytes(row: dict[str, Any], generated_at: str | None) -> bytes:
    """The evidence report of a case as PDF, generated at ``generated_at`` (ISO 8601)."""
    case_ = build_case(row)
    case_["generated_at"] = generated_at
    return evidence_pdf(case_, timeline=_timeline_png(row))


def report_json_bytes(row: dict[str, Any], generated_at: str | None) -> bytes:
    """The evidence report of a case as JSON (``voicecheck.evidence/1``)."""
    case_ = build_case(row)
    case_.pop("audio_kept", None)
    body = {"schema": "voicecheck.evidence/1", "generated_at": generated_at, **case_}
    return json.dumps(body, indent=2, ensure_ascii=False).encode()


@bp.get("/cases/<analysis_id>/report.json")
@signed_in
def report_json(analysis_id: str) -> Response:
    """The evidence report as JSON."""
    row = _case_row(analysis_id)
    data = report_json_bytes(row, iso(time.time()))
    return _report(row, "report_json", data, "application/json", ".json")


def _report(row: dict[str, Any], outcome: str, data: bytes, mimetype: str, suffix: str):
    """Record the download in the audit log, then send the report as an attachment."""
    _audit_console(
        outcome,
        status=200,
        analysis_id=row["id"],
        sha256=row["sha256"],
        filename=row["filename"],
    )
    return send_file(
        io.BytesIO(data),
        mimetype=mimetype,
        as_attachment=True,
        download_name=_download_name(row, suffix),
    )


def html_error(exc: Exception) -> Response | None:
    """The console's page for an error on a console page; None leaves it to problem+json."""
    if not g.get("wants_html"):
        return None
    if isinstance(exc, VoiceCheckError):
        if isinstance(exc, ConsoleAuthError):
            return redirect(url_for("console.sign_in", next=request.path))
        return render_error(exc.status, exc.title, exc.message[0].upper() + exc.message[1:] + ".")
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        detail = {
            404: "There is no page at this address, or the case does not exist.",
            405: "This page cannot be used that way.",
            413: "The upload is larger than this service accepts.",
        }.get(status, exc.description or exc.name)
        if status == 404 and exc.description and "not kept" in exc.description:
            detail = exc.description[0].upper() + exc.description[1:] + "."
        return render_error(status, exc.name, detail)
    return render_error(
        500, "Something went wrong", "The service failed while answering. Please try again."
    )


def register(app: Any) -> None:
    """Add the console to ``app`` (pages, and HTML error pages for them)."""
    from . import (
        admin,  # noqa: F401  (adds the admin pages to the blueprint)
        cases,  # noqa: F401  (adds deletion, legal hold and export to the blueprint)
    )

    app.register_blueprint(bp)
    app.extensions["voicecheck.html_error"] = html_error
