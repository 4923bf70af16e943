"""Job callbacks: check the target URL, then POST the finished job to it.

A callback URL must be ``http`` or ``https`` and, unless the settings allow it, resolve
only to public addresses: loopback, private, link-local, multicast, reserved and
unspecified addresses are refused, when the job is submitted and again before each
delivery (a name can resolve differently later). Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from voicecheck.errors import VoiceCheckError

from .settings import Settings

USER_AGENT = "voicecheck-callback/1"


class CallbackURLError(VoiceCheckError):
    """A callback URL the service will not call."""

    status = 400
    code = "invalid_callback_url"
    title = "Invalid callback URL"


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_callback_url(url: str, settings: Settings) -> str:
    """Return ``url`` when the service may call it.

    Raises
    ------
    CallbackURLError
        Says what is wrong: scheme, missing host, credentials in the URL, a name that
        does not resolve, or an address that is not public.
    """
    url = url.strip()
    if len(url) > 2000:
        raise CallbackURLError("the callback URL is longer than 2000 characters")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise CallbackURLError(
            f"callback URL scheme {parts.scheme or '(none)'!r} is not allowed; use http or https"
        )
    if not parts.hostname:
        raise CallbackURLError(f"callback URL {url!r} has no host")
    if parts.username or parts.password:
        raise CallbackURLError("the callback URL must not carry a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackURLError(f"callback URL {url!r} has an invalid port") from None
    host = parts.hostname.lower()
    if settings.callback_allow_private or host in {
        h.lower() for h in settings.callback_allowed_hosts
    }:
        return url
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackURLError(f"callback host {host!r} does not resolve ({exc})") from None
    blocked = sorted({info[4][0] for info in infos if not _public(info[4][0])})
    if blocked:
        raise CallbackURLError(
            f"callback host {host!r} resolves to non-public address(es) {', '.join(blocked)}; "
            "the service calls only public addresses unless callback_allow_private or "
            "callback_allowed_hosts is set"
        )
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def sign(body: bytes, secret: str) -> str:
    """The ``X-VoiceCheck-Signature`` value for ``body``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(url: str, payload: dict[str, Any], settings: Settings, *, sleep=time.sleep) -> str:
    """POST ``payload`` as JSON to ``url``; returns a status line for the job record.

    Tries ``callback_attempts`` times with growing pauses; a 2xx answer is success.
    Never raises: the outcome is in the returned text.
    """
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if settings.callback_secret:
        headers["X-VoiceCheck-Signature"] = sign(body, settings.callback_secret)
    opener = urllib.request.build_opener(_NoRedirect)
    last = "not attempted"
    for attempt in range(max(1, settings.callback_attempts)):
        if attempt:
            sleep(min(30.0, 2.0**attempt))
        try:
            check_callback_url(url, settings)
        except CallbackURLError as exc:
            return f"refused: {exc}"[:200]
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=settings.callback_timeout_s) as resp:
                if 200 <= resp.status < 300:
                    return f"delivered: HTTP {resp.status}"
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
    return f"failed: {last}"[:200]
