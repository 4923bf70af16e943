"""The console's pages for administrators: users and roles, and partner analyses.

Admins create users, who get a one-time set-password link (its token is shown once to
the admin, stored only as a sha256 and void after use or after ``LINK_HOURS``), disable
and re-enable them, reset them (a new link; the old password stops working) and change
their role. Every change writes an audit row naming the admin (``user_name``), the user
changed (``target_user``) and what changed (``detail``). Admins cannot change their own
account here, so there is always an admin left to undo a change.

The partner page lists analyses made through the API with a key, and flags a recording
(same sha256) that was also checked as a console case.
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Response, abort, g, redirect, render_template, request, url_for

from . import service
from .accounts import (
    LINK_HOURS,
    ROLES,
    AccountError,
    check_role,
    invite_user,
    link_user,
    reset_user,
    role_of,
    use_link,
)
from .audit import record, request_row
from .console import PAGE_SIZE, _check_csrf, admin_only, bp
from .store import StoreError, iso


def _audit_change(outcome: str, target: dict[str, Any], detail: str | None = None) -> None:
    record(
        service(),
        request_row(status=303, outcome=outcome, target_user=target["name"], detail=detail),
    )


def _users_page(*, error: str | None = None, status: int = 200, name: str = "", role: str = ""):
    now = time.time()
    rows = [
        {
            **u,
            "role": role_of(u),
            "created_iso": iso(u["created_at"]),
            "last_iso": iso(u["last_sign_in_at"]),
            "state": (
                "disabled"
                if u["disabled_at"] is not None
                else "locked"
                if u["locked_until"] and u["locked_until"] > now
                else "link pending"
                if u.get("link_expires_at") and u["link_expires_at"] > now
                else "active"
            ),
        }
        for u in service().store.list_users()
    ]
    body = render_template(
        "console/admin_users.html",
        rows=rows,
        roles=ROLES,
        error=error,
        name=name,
        new_role=role or "official",
        link_hours=LINK_HOURS,
    )
    return Response(body, status=status, mimetype="text/html")


@bp.get("/admin/users")
@admin_only
def admin_users() -> Response:
    """Every console user, with forms to add one and to change each."""
    return _users_page()


def _link_page(user: dict[str, Any], token: str, what: str) -> Response:
    """The one-time link, shown to the admin once (it is not stored, only its hash)."""
    link = url_for("console.set_password_page", _external=True) + "?token=" + token
    body = render_template(
        "console/admin_link.html", target=user, link=link, what=what, link_hours=LINK_HOURS
    )
    return Response(body, status=201 if what == "created" else 200, mimetype="text/html")


@bp.post("/admin/users")
@admin_only
def admin_create_user() -> Response:
    """Create a user with a role; the answer shows their one-time set-password link."""
    _check_csrf()
    name = (request.form.get("name") or "").strip()
    role = request.form.get("role") or "official"
    try:
        user, token = invite_user(service().store, name, role=role)
    except (AccountError, StoreError) as exc:
        return _users_page(error=exc.message, status=400, name=name, role=role)
    _audit_change("user_created", user, f"role {role}")
    return _link_page(user, token, "created")


def _target(user_id: str) -> dict[str, Any]:
    user = service().store.get_user(user_id=user_id)
    if user is None:
        abort(404)
    if user["id"] == g.user["id"]:
        raise AccountError(
            "you cannot change your own account here; ask another administrator, or use "
            "`voicecheck users`"
        )
    return user


@bp.post("/admin/users/<user_id>/disable")
@admin_only
def admin_disable_user(user_id: str) -> Response:
    """Stop a user signing in and end their sessions (their cases and notes stay)."""
    _check_csrf()
    user = _target(user_id)
    store = service().store
    store.update_user(user["id"], disabled_at=time.time())
    store.end_sessions(user_id=user["id"])
    _audit_change("user_disabled", user)
    return redirect(url_for("console.admin_users"), code=303)


@bp.post("/admin/users/<user_id>/enable")
@admin_only
def admin_enable_user(user_id: str) -> Response:
    """Let a disabled user sign in again."""
    _check_csrf()
    user = _target(user_id)
    service().store.update_user(user["id"], disabled_at=None)
    _audit_change("user_enabled", user)
    return redirect(url_for("console.admin_users"), code=303)


@bp.post("/admin/users/<user_id>/reset")
@admin_only
def admin_reset_user(user_id: str) -> Response:
    """Void a user's password and sessions; the answer shows a new one-time link."""
    _check_csrf()
    user = _target(user_id)
    token = reset_user(service().store, user["id"])
    _audit_change("user_reset", user, "password voided, new set-password link")
    return _link_page(user, token, "reset")


@bp.post("/admin/users/<user_id>/role")
@admin_only
def admin_set_role(user_id: str) -> Response:
    """Change a user's role (their open sessions get it on their next request)."""
    _check_csrf()
    user = _target(user_id)
    role = check_role(request.form.get("role") or "")
    before = role_of(user)
    if role != before:
        service().store.update_user(user["id"], role=role)
        _audit_change("user_role_changed", user, f"role {before} -> {role}")
    return redirect(url_for("console.admin_users"), code=303)


# --- the one-time set-password link -------------------------------------------------------


@bp.route("/set-password", methods=["GET", "POST"])
def set_password_page() -> Response:
    """The page a one-time link opens: choose a password, then sign in.

    The token travels in the query string (GET) or a hidden field (POST), never in the
    path, so the audit log's ``path`` never holds it. It is a secret only the link's
    holder has, so it also serves as the form's CSRF token.
    """
    svc = service()
    token = request.values.get("token") or ""
    user = link_user(svc.store, token)
    if user is None:
        body = render_template("console/set_password.html", token="", target=None, error=None)
        return Response(body, status=410 if token else 404, mimetype="text/html")
    error = None
    status = 200
    if request.method == "POST":
        password = request.form.get("password") or ""
        if password != (request.form.get("repeat") or ""):
            error, status = "The two passwords differ.", 400
        else:
            try:
                use_link(svc.store, token, password)
            except AccountError as exc:
                error, status = exc.message[0].upper() + exc.message[1:] + ".", 400
            else:
                record(
                    svc,
                    request_row(
                        status=303,
                        outcome="password_set",
                        user_name=user["name"],
                        target_user=user["name"],
                        detail="one-time link used",
                    ),
                )
                return redirect(url_for("console.sign_in", password_set=1), code=303)
    body = render_template("console/set_password.html", token=token, target=user, error=error)
    response = Response(body, status=status, mimetype="text/html")
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# --- partner analyses ---------------------------------------------------------------------


@bp.get("/admin/partner-analyses")
@admin_only
def partner_analyses() -> str:
    """Analyses made through the partner API, newest first, filterable by key."""
    store = service().store
    keys = store.list_keys()
    key_id = request.args.get("key") or ""
    known = {k["id"] for k in keys}
    if key_id and key_id not in known:
        key_id = ""
    try:
        page = max(1, int(request.args.get("page") or 1))
    except ValueError:
        page = 1
    rows, total = store.partner_analyses(
        key_ids=[key_id] if key_id else None,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return render_template(
        "console/partner_analyses.html",
        rows=[{**r, "created_iso": iso(r["created_at"])} for r in rows],
        total=total,
        page=page,
        pages=pages,
        keys=keys,
        key_id=key_id,
        page_url=lambda n: url_for(
            "console.partner_analyses", **({"key": key_id} if key_id else {}), page=n
        ),
    )
