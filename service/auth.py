"""API keys for partner systems: creation, hashing, checking, scopes and rate limits.

A key reads ``vck_<id>_<secret>``. The id is public (it names the key in lists and the
audit log); only the SHA-256 of the secret is stored, and the secret is compared in
constant time. The secret has 256 bits of randomness, so a plain hash is enough: there
is nothing to guess that a slow password hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from voicecheck.errors import VoiceCheckError

from .store import Store

SCOPES = ("analyze", "read", "admin")
"""``analyze``: submit recordings; ``read``: read stored results; ``admin``: everything,
including other keys' results."""

DEFAULT_SCOPES = ("analyze", "read")

_KEY_RE = re.compile(r"^vck_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day|s|min|m|h|d)\s*$")
_PERIOD_S = {"second": 1, "s": 1, "minute": 60, "min": 60, "m": 60, "hour": 3600, "h": 3600}
_PERIOD_S |= {"day": 86400, "d": 86400}


class AuthError(VoiceCheckError):
    """The request carries no valid API key."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(VoiceCheckError):
    """The key lacks the scope the request needs."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class RateLimitedError(VoiceCheckError):
    """The key has used up its rate limit."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(
        self, message: str, *, retry_after_s: int, rate: RateState | None = None, **details: object
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s
        self.rate = rate


class KeyRequestError(VoiceCheckError):
    """A key operation was asked for something impossible (unknown key, bad scope)."""

    status = 400
    code = "invalid_key_request"
    title = "Invalid key request"


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` requests per ``period_s`` seconds."""

    count: int
    period_s: int

    def __str__(self) -> str:
        names = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
        return f"{self.count}/{names.get(self.period_s, f'{self.period_s}s')}"


def parse_rate(text: str | None) -> RateLimit | None:
    """Parse ``"120/minute"``; None for no limit (empty or ``0``).

    >>> parse_rate("120/minute")
    RateLimit(count=120, period_s=60)
    >>> parse_rate("0") is None
    True
    """
    if text is None or not str(text).strip() or str(text).strip() in {"0", "none", "off"}:
        return None
    m = _RATE_RE.match(str(text).lower())
    if not m:
        raise KeyRequestError(
            f"rate limit {text!r} is not understood; expected N/second, N/minute, N/hour or N/day"
        )
    count = int(m.group(1))
    return RateLimit(count, _PERIOD_S[m.group(2)]) if count > 0 else None


def parse_duration(text: str) -> float:
    """Seconds in ``"90d"``, ``"12h"``, ``"30m"`` or ``"2w"``.

    >>> parse_duration("90d")
    7776000.0
    """
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise KeyRequestError(
            f"duration {text!r} is not understood; expected a number and s, m, h, d or w (90d)"
        )
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return float(m.group(1)) * unit


def hash_secret(secret: str) -> str:
    """SHA-256 of a key's secret part, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A checked, active key."""

    id: str
    name: str
    scopes: frozenset[str]
    rate_limit: str | None

    def allows(self, scope: str) -> bool:
        """True when the key has ``scope`` (admin has every scope)."""
        return scope in self.scopes or "admin" in self.scopes


def create_key(
    store: Store,
    name: str,
    *,
    scopes: tuple[str, ...] | list[str] = DEFAULT_SCOPES,
    rate_limit: str | None = None,
    expires_at: float | None = None,
) -> tuple[dict[str, Any], str]:
    """Create a key; returns its stored row and the full key (shown once, never stored).

    Raises
    ------
    KeyRequestError
        For an empty name, an unknown scope or an unreadable rate limit.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise KeyRequestError("a key needs a name of 1 to 200 characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise KeyRequestError(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SCOPES)}"
        )
    if rate_limit is not None:
        limit = parse_rate(rate_limit)
        rate_limit = str(limit) if limit else "0"
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = {
        "id": key_id,
        "name": name,
        "secret_sha256": hash_secret(secret),
        "scopes": ",".join(s for s in SCOPES if s in scopes),
        "rate_limit": rate_limit,
        "created_at": time.time(),
        "revoked_at": None,
        "expires_at": expires_at,
    }
    store.add_key(row)
    return row, f"vck_{key_id}_{secret}"


def check_key(store: Store, header: str | None) -> ApiKey:
    """Check an ``Authorization`` header value and return the key it names.

    Raises
    ------
    AuthError
        No header, not a Bearer key, unknown, revoked or wrong secret (one message for
        all three, so a caller cannot tell which ids exist).
    """
    if not header:
        raise AuthError("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <key>'")
    m = _KEY_RE.match(token.strip())
    # Hash even a malformed token so that every refusal costs the same.
    presented = hash_secret(m.group(2) if m else token)
    row = store.get_key(m.group(1)) if m else None
    stored = row["secret_sha256"] if row else hash_secret(secrets.token_urlsafe(32))
    if not hmac.compare_digest(presented, stored) or row is None or row["revoked_at"] is not None:
        raise AuthError("the API key is not valid (unknown, revoked or mistyped)")
    if row["expires_at"] is not None and row["expires_at"] <= time.time():
        raise AuthError(f"the API key {row['id']} has expired; ask for a new one")
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scopes=frozenset(row["scopes"].split(",")),
        rate_limit=row["rate_limit"],
    )


@dataclass(frozen=True)
class RateState:
    """Where a key stands against its limit, for the ``RateLimit-*`` response headers."""

    limit: RateLimit
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` and the policy."""
        return {
            "RateLimit-Limit": str(self.limit.count),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit.count};w={self.limit.period_s}",
        }


def check_rate(
    store: Store, key: ApiKey, default: str, *, now: float | None = None
) -> RateState | None:
    """Refuse the request when ``key`` has used up its limit in the current window.

    Counts the key's audit rows (one per analysed file or refused request, 429s
    excluded) in the sliding window, so the limit holds across server processes that
    share the store.

    Returns
    -------
    RateState or None
        The key's standing before this request (None when it has no limit).

    Raises
    ------
    RateLimitedError
        With the seconds until the oldest counted request leaves the window.
    """
    limit = parse_rate(key.rate_limit if key.rate_limit is not None else default)
    if limit is None:
        return None
    now = time.time() if now is None else now
    used, oldest = store.count_recent(key.id, now - limit.period_s)
    reset = max(1, math.ceil((oldest or now) + limit.period_s - now))
    if used >= limit.count:
        raise RateLimitedError(
            f"key {key.name!r} has used its limit of {limit}; retry in {reset} s",
            retry_after_s=reset,
            limit=str(limit),
            rate=RateState(limit, 0, reset),
        )
    return RateState(limit, limit.count - used - 1, reset)
