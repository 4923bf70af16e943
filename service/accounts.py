"""Console accounts: users with scrypt-hashed passwords, lock-out, and server-side sessions.

Officials sign in to the web console with a name and a password; partner systems use API
keys (:mod:`.auth`) and never a password. Passwords are hashed with scrypt (RFC 7914,
through :func:`werkzeug.security.generate_password_hash`, a random salt per password);
only the hash is stored. After ``sign_in_max_failures`` wrong passwords in a row an
account is locked for ``sign_in_lock_minutes``. Besides, one client address may fail to sign
in at most ``sign_in_address_max_failures`` times in ``sign_in_address_window_minutes``,
whatever names it tries (:func:`address_wait_s`); the count is read from the audit log's
``sign_in_failed`` rows, so every server process sees the same one.

A session is a random token in an ``HttpOnly``, ``SameSite=Lax`` cookie; the store keeps
only its sha256, with the user, a CSRF token, and its start and last use, so signing out
(or ``voicecheck users disable``) ends it on every server process at once.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from voicecheck.errors import VoiceCheckError

from .store import audit, fit, new_id, users

if TYPE_CHECKING:
    from .settings import Settings
    from .store import Store

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 256
MAX_NAME_CHARS = 100
PASSWORD_METHOD = "scrypt:32768:8:1"  # N=2**15, r=8, p=1: 32 MiB and 0.05-0.12 s per check here
LINK_HOURS = 48  # how long a one-time set-password link works
ROLES = ("admin", "official", "viewer")
"""Console roles: admins also manage users and see partner analyses; viewers only read."""
DEFAULT_ROLE = "official"
SIGN_IN_FAILED = "sign_in_failed"
"""Outcome of the audit row of a failed sign-in (the rows the address throttle counts)."""


class AccountError(VoiceCheckError):
    """A user name or password that cannot be accepted."""

    status = 400
    code = "bad_account"
    title = "Account not accepted"


class SignInError(VoiceCheckError):
    """A sign-in that failed: wrong name or password, a locked or a disabled account."""

    status = 401
    code = "sign_in_failed"
    title = "Sign-in failed"


def check_name(name: str) -> str:
    """The user name, stripped; AccountError unless it is 1-100 printable characters.

    >>> check_name("  clerk.ramos ")
    'clerk.ramos'
    """
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise AccountError(
            f"user name {name!r} is not accepted; expected 1 to {MAX_NAME_CHARS} printable "
            "characters"
        )
    return name


def check_password(name: str, password: str) -> None:
    """AccountError unless ``password`` is 10-256 characters and not the user name.

    >>> try:
    ...     check_password("clerk", "short")
    ... except AccountError as exc:
    ...     print(exc.message)
    the password has 5 characters; at least 10 are needed
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(
            f"the password has {len(password)} characters; at least {MIN_PASSWORD_CHARS} are needed"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(
            f"the password has {len(password)} characters; at most {MAX_PASSWORD_CHARS} are "
            "accepted"
        )
    if password.strip().lower() == name.strip().lower():
        raise AccountError("the password must not be the user name")


def hash_password(password: str) -> str:
    """The scrypt hash of ``password`` with a fresh salt, as stored."""
    return generate_password_hash(password, method=PASSWORD_METHOD)


@functools.cache
def _decoy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`; AccountError naming them otherwise."""
    if role not in ROLES:
        raise AccountError(f"role {role!r} is not known; expected one of {', '.join(ROLES)}")
    return role


def role_of(user: dict[str, Any]) -> str:
    """A user's role; users from before roles existed are officials."""
    return user.get("role") or user.get("user_role") or DEFAULT_ROLE


def create_user(
    store: Store, name: str, password: str, *, role: str = DEFAULT_ROLE
) -> dict[str, Any]:
    """Create a console user; returns its row (without the hash)."""
    name = check_name(name)
    check_password(name, password)
    check_role(role)
    now = time.time()
    row = {
        "id": new_id("usr")[:32],
        "name": name,
        "password_hash": hash_password(password),
        "created_at": now,
        "password_changed_at": now,
        "failed_count": 0,
        "role": role,
    }
    store.add_user(row)
    return {k: v for k, v in row.items() if k != "password_hash"}


def invite_user(
    store: Store, name: str, *, role: str = DEFAULT_ROLE, hours: float = LINK_HOURS
) -> tuple[dict[str, Any], str]:
    """Create a user without a usable password; returns its row and a one-time link token.

    The user sets a password by opening the link (:func:`use_link`) within ``hours``.
    """
    name = check_name(name)
    check_role(role)
    token = secrets.token_urlsafe(32)
    now = time.time()
    row = {
        "id": new_id("usr")[:32],
        "name": name,
        "password_hash": hash_password(secrets.token_urlsafe(32)),  # known to nobody
        "created_at": now,
        "failed_count": 0,
        "role": role,
        "link_sha256": _digest(token),
        "link_expires_at": now + hours * 3600,
    }
    store.add_user(row)
    return {k: v for k, v in row.items() if k not in ("password_hash", "link_sha256")}, token


def reset_user(store: Store, user_id: str, *, hours: float = LINK_HOURS) -> str:
    """Void a user's password and sessions; returns a new one-time link token.

    The old password stops working at once; any earlier link is replaced. The account is
    unlocked, so the link's new password can be used at once.
    """
    token = secrets.token_urlsafe(32)
    store.update_user(
        user_id,
        password_hash=hash_password(secrets.token_urlsafe(32)),
        password_changed_at=time.time(),
        failed_count=0,
        locked_until=None,
        link_sha256=_digest(token),
        link_expires_at=time.time() + hours * 3600,
    )
    store.end_sessions(user_id=user_id)
    return token


def link_user(store: Store, token: str | None) -> dict[str, Any] | None:
    """The user whose live one-time link ``token`` is, or None (unknown, used, expired)."""
    if not token or len(token) > 100:
        return None
    with store.begin() as conn:
        row = conn.execute(
            sa.select(users).where(
                users.c.link_sha256 == _digest(token), users.c.link_expires_at > time.time()
            )
        ).first()
    return dict(row._mapping) if row else None


def use_link(store: Store, token: str, password: str) -> dict[str, Any]:
    """Set the password of the one-time link's user and void the link; returns the user.

    AccountError when the link is unknown, used or expired, or the password is refused.
    """
    user = link_user(store, token)
    if user is None:
        raise AccountError("this link is not valid: it was used already, replaced or expired")
    check_password(user["name"], password)
    done = store.use_link(
        _digest(token),
        time.time(),
        password_hash=hash_password(password),
        password_changed_at=time.time(),
        failed_count=0,
        locked_until=None,
    )
    if done is None:
        raise AccountError("this link is not valid: it was used already, replaced or expired")
    return done


def find_user(store: Store, name: str) -> dict[str, Any]:
    """The user called ``name``; AccountError naming the known users when there is none."""
    row = store.get_user(name=(name or "").strip())
    if row is None:
        known = ", ".join(u["name"] for u in store.list_users()) or "none yet"
        raise AccountError(f"no user is named {name!r} (users: {known})")
    return row


def set_password(store: Store, name: str, password: str) -> None:
    """Give a user a new password, unlock the account and end its sessions."""
    user = find_user(store, name)
    check_password(user["name"], password)
    store.update_user(
        user["id"],
        password_hash=hash_password(password),
        password_changed_at=time.time(),
        failed_count=0,
        locked_until=None,
    )
    store.end_sessions(user_id=user["id"])


def authenticate(store: Store, name: str, password: str, settings: Settings) -> dict[str, Any]:
    """The user whose ``name`` and ``password`` these are; SignInError otherwise.

    A wrong password counts towards the lock-out; a locked account is refused before its
    password is checked, so guessing cannot go on while it is locked. An unknown name costs
    the same hash check as a known one.
    """
    now = time.time()
    user = store.get_user(name=(name or "").strip()[:MAX_NAME_CHARS])
    if user is None:
        check_password_hash(_decoy_hash(), password or "")
        raise SignInError("the user name or the password is wrong")
    if user["locked_until"] is not None and user["locked_until"] > now:
        minutes = max(1, round((user["locked_until"] - now) / 60))
        raise SignInError(
            f"this account is locked after {settings.sign_in_max_failures} failed sign-ins; "
            f"try again in {minutes} minute{'s' if minutes != 1 else ''}, or ask an "
            "administrator to unlock it",
            locked=True,
        )
    if not check_password_hash(user["password_hash"], password or ""):
        failures = store.sign_in_failed(
            user["id"],
            now,
            max_failures=settings.sign_in_max_failures,
            lock_s=settings.sign_in_lock_minutes * 60,
        )
        if failures == 0 or failures >= settings.sign_in_max_failures:
            raise SignInError(
                f"the user name or the password is wrong; after "
                f"{settings.sign_in_max_failures} failed sign-ins this account is now locked "
                f"for {settings.sign_in_lock_minutes:g} minutes",
                locked=True,
            )
        raise SignInError("the user name or the password is wrong")
    if user["disabled_at"] is not None:
        raise SignInError("this account is disabled; ask an administrator")
    store.update_user(user["id"], failed_count=0, locked_until=None, last_sign_in_at=now)
    return user


def address_wait_s(
    store: Store, client_addr: str | None, settings: Settings, *, now: float | None = None
) -> float:
    """Seconds before ``client_addr`` may try to sign in again; 0 while it may.

    An address is held back once ``sign_in_address_max_failures`` sign-ins from it failed
    within the last ``sign_in_address_window_minutes`` (any user names, known or not), until
    the oldest of those failures is older than the window. Failures are the audit log's
    ``sign_in_failed`` rows, which every server process writes before answering, so the
    limit holds across processes and servers sharing the store; requests that arrive
    together may each pass the check before the others' rows are written, so a burst can
    overshoot the limit by the number of requests answered at once. A successful sign-in
    clears nothing: failures age out of the window on their own. ``0`` failures turns the
    throttle off.
    """
    limit = settings.sign_in_address_max_failures
    if limit <= 0 or not client_addr:
        return 0.0
    now = time.time() if now is None else now
    window_s = settings.sign_in_address_window_minutes * 60
    newest = (
        sa.select(audit.c.time)
        .where(
            audit.c.time > now - window_s,
            audit.c.client_addr == fit(audit, {"client_addr": client_addr})["client_addr"],
            audit.c.outcome == SIGN_IN_FAILED,
        )
        .order_by(audit.c.time.desc())
        .limit(limit)
    )
    with store.begin() as conn:
        times = conn.execute(newest).scalars().all()
    if len(times) < limit:
        return 0.0
    return max(0.0, min(times) + window_s - now)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    store: Store,
    user: dict[str, Any],
    settings: Settings,
    *,
    client_addr: str | None,
    user_agent: str | None,
) -> str:
    """Open a session for ``user``; returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    store.add_session(
        {
            "id": _digest(token),
            "user_id": user["id"],
            "csrf": secrets.token_urlsafe(32),
            "created_at": now,
            "last_seen": now,
            "expires_at": now + settings.session_max_hours * 3600,
            "client_addr": client_addr,
            "user_agent": user_agent,
        }
    )
    return token


def session_for(store: Store, token: str | None, settings: Settings) -> dict[str, Any] | None:
    """The live session behind a cookie's ``token``, or None (ended, idle, unknown)."""
    if not token or len(token) > 100:
        return None
    sid = _digest(token)
    row = store.get_session(sid)
    now = time.time()
    if row is None:
        return None
    if (
        row["expires_at"] < now
        or row["last_seen"] < now - settings.session_idle_minutes * 60
        or row["user_disabled_at"] is not None
    ):
        store.end_sessions(session_id=sid)
        return None
    if now - row["last_seen"] > 30:  # one write a half-minute is enough for the idle clock
        store.touch_session(sid, now)
    return row


def end_session(store: Store, token: str | None) -> None:
    """Sign the session behind ``token`` out."""
    if token:
        store.end_sessions(session_id=_digest(token))


def same_token(expected: str | None, presented: str | None) -> bool:
    """Whether a presented CSRF token matches, in constant time."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
