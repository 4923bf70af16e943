"""Service settings: defaults, an instance file, ``VOICECHECK_*`` variables, overrides.

Every setting has a default that is safe on a single machine. Each one can be set in
the instance file (``<data dir>/voicecheck.toml``, or the file named by
``VOICECHECK_CONFIG``) and in an environment variable named ``VOICECHECK_`` plus the
setting's name in capitals (``max_upload_mb`` -> ``VOICECHECK_MAX_UPLOAD_MB``).
Test code passes overrides to :func:`voicecheck.service.create_app` directly.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from voicecheck.errors import VoiceCheckError

ENV_PREFIX = "VOICECHECK_"


class SettingsError(VoiceCheckError):
    """A setting has a value the service cannot use."""

    status = 500
    code = "invalid_settings"
    title = "Invalid settings"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/voicecheck``, by default ``~/.local/share/voicecheck``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voicecheck"


@dataclass
class Settings:
    """Everything the service can be told.

    Attributes
    ----------
    data_dir : str
        Folder for the database (SQLite), job uploads, retained audio and metrics files.
    database_url : str
        SQLAlchemy URL of the audit store; empty means ``sqlite:///<data_dir>/voicecheck.db``.
        Use ``postgresql+psycopg://user:password@host/db`` when several servers share it.
    model : str
        Path of a ``.skops`` model; empty means the model shipped with voicecheck.
    max_upload_mb : float
        Largest single uploaded file, in MiB (413 above it).
    max_request_mb : float
        Largest request body, in MiB, batches and jobs included (413 above it).
    max_sync_duration_s : float
        Longest recording ``/v1/analyze`` and ``/v1/analyze/batch`` score while the client
        waits; longer ones are refused with a pointer to ``/v1/jobs``.
    max_job_duration_s : float
        Longest recording a job accepts.
    max_job_upload_mb : float
        Largest single file a job accepts, in MiB (streamed to disk, not held in memory).
    max_job_request_mb : float
        Largest ``/v1/jobs`` request body, in MiB.
    max_batch_files : int
        Most files in one ``/v1/analyze/batch`` request.
    max_job_files : int
        Most files in one job.
    rate_limit : str
        Default per-key limit, ``N/second``, ``N/minute`` or ``N/hour``, counted per
        analysed file and per refused request; ``0`` or empty turns limiting off. A key can
        carry its own limit.
    retain_audio : bool
        Keep uploaded audio under ``<data_dir>/audio`` (off by default: only its sha256
        is kept).
    retention_days : float
        When audio is kept, delete it after this many days (0 keeps it until removed by hand).
    job_runner : bool
        Run queued jobs in a background thread of every server process.
    job_poll_s : float
        How often an idle job runner looks for work, in seconds.
    job_lease_s : float
        A running job whose process stopped renewing its lease this long ago is taken over.
    callback_allow_private : bool
        Allow job callbacks to loopback, private, link-local and other non-public
        addresses (for a callback receiver on your own network).
    callback_allowed_hosts : list of str
        Host names allowed as callback targets whatever their address.
    callback_timeout_s : float
        Time allowed for one callback delivery attempt.
    callback_attempts : int
        Delivery attempts per callback before giving up.
    callback_secret : str
        When set, callbacks carry ``X-VoiceCheck-Signature: sha256=<HMAC of the body>``.
    trusted_proxies : int
        Number of reverse proxies in front of the service whose ``X-Forwarded-For`` to trust:
        the client's address (for the audit log and the sign-in throttle) is the entry that
        many places from the right. With ``0`` the header is ignored and the address is the
        connection's.
    log_level : str
        ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
    log_format : str
        ``json`` (one object a line) or ``text``.
    console : bool
        Serve the web console for officials at ``/``.
    console_keep_audio : bool
        Keep the audio of files uploaded in the console (for its player, timeline and
        evidence report) whatever ``retain_audio`` says; ``retention_days`` still applies.
    session_idle_minutes : float
        A console session unused this long ends.
    session_max_hours : float
        A console session ends this long after sign-in, however busy.
    sign_in_max_failures : int
        Failed sign-ins in a row that lock an account.
    sign_in_lock_minutes : float
        How long a locked account stays locked (``voicecheck users unlock`` ends it early).
    sign_in_address_max_failures : int
        Failed console sign-ins from one client address, whatever the user names, after
        which that address is refused (429 with ``Retry-After``) until the oldest of them is
        ``sign_in_address_window_minutes`` old; ``0`` turns this off.
    sign_in_address_window_minutes : float
        The window over which ``sign_in_address_max_failures`` are counted.
    cookie_secure : str
        ``auto`` marks the session cookie ``Secure`` when the request came over HTTPS;
        ``always`` or ``never`` force it.
    streams : bool
        Serve live calls over WebSocket (``/v1/streams``, ``/v1/streams/twilio``).
    stream_max_per_key : int
        Most streams one key may have open at once, across every server process.
    stream_idle_timeout_s : float
        A stream that sends nothing for this long is closed (what was heard is stored).
    stream_max_message_kb : float
        Largest WebSocket message a stream may send, in KiB.
    """

    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    database_url: str = ""
    model: str = ""
    max_upload_mb: float = 64.0
    max_request_mb: float = 256.0
    max_sync_duration_s: float = 900.0
    max_job_duration_s: float = 4 * 3600.0
    max_job_upload_mb: float = 1024.0
    max_job_request_mb: float = 2048.0
    max_batch_files: int = 16
    max_job_files: int = 200
    rate_limit: str = "600/minute"
    retain_audio: bool = False
    retention_days: float = 0.0
    job_runner: bool = True
    job_poll_s: float = 1.0
    job_lease_s: float = 120.0
    callback_allow_private: bool = False
    callback_allowed_hosts: list[str] = field(default_factory=list)
    callback_timeout_s: float = 10.0
    callback_attempts: int = 3
    callback_secret: str = ""
    trusted_proxies: int = 0
    log_level: str = "INFO"
    log_format: str = "json"
    console: bool = True
    console_keep_audio: bool = True
    session_idle_minutes: float = 60.0
    session_max_hours: float = 12.0
    sign_in_max_failures: int = 5
    sign_in_lock_minutes: float = 15.0
    sign_in_address_max_failures: int = 20
    sign_in_address_window_minutes: float = 10.0
    cookie_secure: str = "auto"
    streams: bool = True
    stream_max_per_key: int = 50
    stream_idle_timeout_s: float = 15.0
    stream_max_message_kb: float = 256.0

    @property
    def database(self) -> str:
        """The database URL, defaulting to SQLite in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'voicecheck.db'}"

    @property
    def max_upload_bytes(self) -> int:
        """Largest single file, in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_job_request_bytes(self) -> int:
        """Largest job request body, in bytes."""
        return int(self.max_job_request_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body, in bytes."""
        return int(self.max_request_mb * 1024 * 1024)

    def public(self) -> dict[str, Any]:
        """The settings without secrets (for logs and the admin view)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["callback_secret"]:
            out["callback_secret"] = "***"
        out["database_url"] = _hide_password(self.database)
        return out


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def _kind_name(kind: Any) -> str:
    name = kind if isinstance(kind, str) else kind.__name__
    return {"bool": "true or false", "int": "a whole number", "float": "a number"}.get(
        name, "a comma-separated list" if name.startswith("list") else "text"
    )


def _convert(name: str, kind: Any, value: Any, origin: str) -> Any:
    try:
        if kind is bool or kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(value)
        if kind is int or kind == "int":
            return int(value)
        if kind is float or kind == "float":
            return float(value)
        if kind in (list, "list[str]"):
            if isinstance(value, list):
                return [str(v) for v in value]
            return [v.strip() for v in str(value).split(",") if v.strip()]
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(
            f"setting {name} from {origin} is {value!r}; expected {_kind_name(kind)}"
        ) from None


def load_settings(
    overrides: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None
) -> Settings:
    """Build the settings: defaults -> instance file -> environment -> ``overrides``.

    Raises
    ------
    SettingsError
        For an unknown setting in the instance file or ``overrides``, or a value of the
        wrong type.
    """
    environ = dict(os.environ if environ is None else environ)
    kinds = {f.name: f.type for f in fields(Settings)}
    values: dict[str, Any] = {}

    data_dir = (overrides or {}).get("data_dir") or environ.get(f"{ENV_PREFIX}DATA_DIR")
    config_file = environ.get(f"{ENV_PREFIX}CONFIG")
    path = (
        Path(config_file)
        if config_file
        else Path(data_dir or default_data_dir()) / "voicecheck.toml"
    )
    if path.is_file():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read the instance file {path}: {exc}") from None
        for key, value in table.items():
            if key not in kinds:
                raise SettingsError(f"{path}: unknown setting {key!r}; known: {', '.join(kinds)}")
            values[key] = _convert(key, kinds[key], value, str(path))
    elif config_file:
        raise SettingsError(f"VOICECHECK_CONFIG names {path}, which does not exist")

    for key, kind in kinds.items():
        env = f"{ENV_PREFIX}{key.upper()}"
        if env in environ:
            values[key] = _convert(key, kind, environ[env], env)

    for key, value in (overrides or {}).items():
        if key not in kinds:
            raise SettingsError(f"unknown setting {key!r}; known: {', '.join(kinds)}")
        values[key] = _convert(key, kinds[key], value, "the overrides")

    settings = Settings(**values)
    positive = (
        "max_upload_mb",
        "max_request_mb",
        "max_job_upload_mb",
        "max_job_request_mb",
        "max_sync_duration_s",
        "max_job_duration_s",
        "session_idle_minutes",
        "session_max_hours",
        "sign_in_max_failures",
        "sign_in_lock_minutes",
        "sign_in_address_window_minutes",
        "stream_max_per_key",
        "stream_idle_timeout_s",
        "stream_max_message_kb",
    )
    for key in positive:
        if getattr(settings, key) <= 0:
            raise SettingsError(f"setting {key} is {getattr(settings, key)}; expected more than 0")
    for key in ("trusted_proxies", "sign_in_address_max_failures"):
        if getattr(settings, key) < 0:
            raise SettingsError(f"setting {key} is {getattr(settings, key)}; expected 0 or more")
    if settings.log_format not in {"json", "text"}:
        raise SettingsError(f"setting log_format is {settings.log_format!r}; expected json or text")
    if settings.cookie_secure not in {"auto", "always", "never"}:
        raise SettingsError(
            f"setting cookie_secure is {settings.cookie_secure!r}; expected auto, always or never"
        )
    return settings
