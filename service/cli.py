"""``voicecheck serve``, ``worker``, ``keys``, ``users`` and ``audit``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from voicecheck.errors import VoiceCheckError

_store_options = [
    click.option(
        "--data-dir",
        envvar="VOICECHECK_DATA_DIR",
        type=click.Path(file_okay=False, path_type=str),
        help="Data folder (database, job uploads). Default: ~/.local/share/voicecheck.",
    ),
    click.option(
        "--database-url",
        envvar="VOICECHECK_DATABASE_URL",
        help="SQLAlchemy URL of the store (default: SQLite in the data folder).",
    ),
]


def store_options(f):  # noqa: ANN001, ANN201
    """Add --data-dir and --database-url to a command."""
    for option in reversed(_store_options):
        f = option(f)
    return f


def _overrides(data_dir: str | None, database_url: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if data_dir:
        out["data_dir"] = data_dir
    if database_url:
        out["database_url"] = database_url
    return out


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _open_store(data_dir: str | None, database_url: str | None):  # noqa: ANN202
    from .settings import load_settings
    from .store import Store

    try:
        settings = load_settings(_overrides(data_dir, database_url))
        return Store(settings.database)
    except VoiceCheckError as exc:
        _fail(str(exc))


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="VOICECHECK_HOST",
    help="Address to listen on (0.0.0.0 for every interface).",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    envvar="VOICECHECK_PORT",
    help="TCP port.",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 256),
    envvar="VOICECHECK_WORKERS",
    help="gunicorn worker processes (about one per core).",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="VOICECHECK_THREADS",
    help="Threads per worker (more than 1: gthread workers).",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=120,
    show_default=True,
    type=click.IntRange(10),
    envvar="VOICECHECK_TIMEOUT_S",
    help="Seconds before a silent worker is restarted.",
)
@click.option(
    "--model",
    envvar="VOICECHECK_MODEL",
    type=click.Path(path_type=str),
    help="A .skops model file (default: the model shipped with voicecheck).",
)
@click.option("--access-log", is_flag=True, help="Also write gunicorn's access log.")
@store_options
def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    timeout_s: int,
    model: str | None,
    access_log: bool,
    data_dir: str | None,
    database_url: str | None,
) -> None:
    """Start the HTTP API under gunicorn (foreground; stop with Ctrl-C or SIGTERM).

    Every other setting comes from VOICECHECK_* environment variables or the instance
    file <data dir>/voicecheck.toml (see the README).
    """
    from .server import serve as run

    overrides = _overrides(data_dir, database_url)
    if model:
        overrides["model"] = model
    try:
        run(
            host=host,
            port=port,
            workers=workers,
            threads=threads,
            timeout_s=timeout_s,
            overrides=overrides,
            access_log=access_log,
        )
    except VoiceCheckError as exc:
        _fail(str(exc))


@click.command()
@click.option(
    "--model",
    envvar="VOICECHECK_MODEL",
    type=click.Path(path_type=str),
    help="A .skops model file (default: the model shipped with voicecheck).",
)
@store_options
def worker(model: str | None, data_dir: str | None, database_url: str | None) -> None:
    """Run queued jobs in the foreground, without serving HTTP (stop with Ctrl-C or SIGTERM).

    For deployments that keep long jobs off the API servers: start the API with
    VOICECHECK_JOB_RUNNER=false and one or more workers on the same store and data folder.
    """
    import signal

    from . import create_app

    overrides = {**_overrides(data_dir, database_url), "job_runner": False}
    if model:
        overrides["model"] = model
    try:
        app = create_app(overrides)
    except VoiceCheckError as exc:
        _fail(str(exc))
    runner = app.extensions["voicecheck"].runner

    def _stop(signum: int, frame: Any) -> None:
        runner.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo(f"voicecheck job worker {runner.name} started", err=True)
    runner.run_forever()
    runner.stop()
    click.echo("voicecheck job worker stopped", err=True)


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["analyze", "read", "admin"]),
    help="Scope (repeatable). Default: analyze and read.",
)
@click.option(
    "--rate-limit",
    default=None,
    help="This key's limit, e.g. 120/minute (0 for none). Default: the server's.",
)
@click.option("--expires-in", default=None, help="Make the key stop working after e.g. 90d or 12h.")
@click.option(
    "--callback-url",
    default=None,
    help="Where the results of this key's live streams are POSTed (first verdict, result).",
)
@store_options
def keys_create(
    name: str,
    scopes: tuple[str, ...],
    rate_limit: str | None,
    expires_in: str | None,
    callback_url: str | None,
    data_dir: str | None,
    database_url: str | None,
) -> None:
    """Create a key named NAME; the key itself is printed alone on the last line, once."""
    import time

    from .auth import DEFAULT_SCOPES, create_key, parse_duration
    from .callbacks import check_callback_url
    from .settings import load_settings

    store = _open_store(data_dir, database_url)
    try:
        if callback_url:
            settings = load_settings(_overrides(data_dir, database_url))
            callback_url = check_callback_url(callback_url, settings)
        expires_at = time.time() + parse_duration(expires_in) if expires_in else None
        row, key = create_key(
            store,
            name,
            scopes=scopes or DEFAULT_SCOPES,
            rate_limit=rate_limit,
            expires_at=expires_at,
        )
        if callback_url:
            store.set_key_callback(row["id"], callback_url)
    except VoiceCheckError as exc:
        _fail(str(exc))
    click.echo(
        f"created key {row['id']} ({row['name']}), scopes: {row['scopes']}, "
        f"rate limit: {row['rate_limit'] or 'server default'}, "
        f"expires: {_when(row['expires_at']) if row['expires_at'] else 'never'}"
    )
    click.echo("store it now; it cannot be shown again:")
    click.echo(key)


@keys.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@store_options
def keys_list(
    show_all: bool, as_json: bool, data_dir: str | None, database_url: str | None
) -> None:
    """List keys: id, name, scopes, rate limit, created, last used, expiry, revocation."""
    import json
    import time

    store = _open_store(data_dir, database_url)
    now = time.time()
    used = store.last_used()
    rows = [
        {**{k: v for k, v in r.items() if k != "secret_sha256"}, "last_used_at": used.get(r["id"])}
        for r in store.list_keys()
        if show_all
        or (r["revoked_at"] is None and (r["expires_at"] is None or r["expires_at"] > now))
    ]
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    click.echo(
        f"{'ID':<12}  {'NAME':<20}  {'SCOPES':<18}  {'RATE':<11}  {'CREATED':<20}  "
        f"{'LAST USED':<20}  {'EXPIRES':<20}  REVOKED"
    )
    for r in rows:
        click.echo(
            f"{r['id']:<12}  {r['name'][:20]:<20}  {r['scopes']:<18}  "
            f"{(r['rate_limit'] or 'default'):<11}  {_when(r['created_at']):<20}  "
            f"{_when(r['last_used_at']):<20}  {_when(r['expires_at']):<20}  "
            f"{_when(r['revoked_at'])}"
        )


@keys.command("revoke")
@click.argument("key")
@store_options
def keys_revoke(key: str, data_dir: str | None, database_url: str | None) -> None:
    """Revoke KEY (its id, its name when only one active key has it, or the key itself)."""
    import time

    store = _open_store(data_dir, database_url)
    ident = key.split("_")[1] if key.startswith("vck_") and key.count("_") >= 2 else key
    matches = [r for r in store.find_keys(ident) if r["revoked_at"] is None]
    if not matches:
        _fail(f"no active key has the id or name {ident!r} (see `voicecheck keys list`)")
    if len(matches) > 1:
        _fail(
            f"{len(matches)} active keys are named {ident!r}; revoke one by its id: "
            + ", ".join(r["id"] for r in matches)
        )
    store.revoke_key(matches[0]["id"], time.time())
    click.echo(f"revoked key {matches[0]['id']} ({matches[0]['name']})")


@click.group()
def users() -> None:
    """Create and manage the web console's users (officials)."""


def _read_password(name: str, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            _fail("--password-stdin was given, but standard input is empty")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        _fail("no terminal to ask for the password; pipe it in with --password-stdin")
    return click.prompt(
        f"Password for {name}", hide_input=True, confirmation_prompt="Repeat the password"
    )


@users.command("create")
@click.argument("name")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of a prompt.",
)
@click.option(
    "--role",
    type=click.Choice(["admin", "official", "viewer"]),
    default="official",
    show_default=True,
    help="admin: also manages users in the console; viewer: reads cases and reports only.",
)
@store_options
def users_create(
    name: str, password_stdin: bool, role: str, data_dir: str | None, database_url: str | None
) -> None:
    """Create a console user NAME; the password is asked for (or read with --password-stdin).

    Passwords need at least 10 characters and are stored only as a scrypt hash. Create the
    first admin this way (`--role admin`); admins then add users in the console.
    """
    from .accounts import check_name, create_user

    store = _open_store(data_dir, database_url)
    try:
        name = check_name(name)
        if store.get_user(name=name) is not None:
            _fail(f"a user named {name!r} exists already (see `voicecheck users list`)")
        row = create_user(store, name, _read_password(name, password_stdin), role=role)
    except VoiceCheckError as exc:
        _fail(str(exc))
    _audit_user_change(store, "create", "user_created", row["name"], f"role {role}")
    click.echo(
        f"created user {row['name']} ({row['id']}, {role}); they can sign in at the console now"
    )


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user.")
@store_options
def users_list(as_json: bool, data_dir: str | None, database_url: str | None) -> None:
    """List users: name, role, created, last sign-in, and whether locked or disabled."""
    import json
    import time

    store = _open_store(data_dir, database_url)
    now = time.time()
    rows = [
        {
            "id": r["id"],
            "name": r["name"],
            "role": r["role"] or "official",
            "created_at": r["created_at"],
            "last_sign_in_at": r["last_sign_in_at"],
            "locked": bool(r["locked_until"] and r["locked_until"] > now),
            "disabled": r["disabled_at"] is not None,
        }
        for r in store.list_users()
    ]
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    click.echo(f"{'NAME':<24}  {'ROLE':<8}  {'CREATED':<20}  {'LAST SIGN-IN':<20}  STATE")
    for r in rows:
        state = "disabled" if r["disabled"] else "locked" if r["locked"] else "active"
        click.echo(
            f"{r['name'][:24]:<24}  {r['role']:<8}  {_when(r['created_at']):<20}  "
            f"{_when(r['last_sign_in_at']):<20}  {state}"
        )


@users.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@store_options
def users_set_password(
    name: str, password_stdin: bool, data_dir: str | None, database_url: str | None
) -> None:
    """Give NAME a new password; this also unlocks the account and signs it out everywhere."""
    from .accounts import find_user, set_password

    store = _open_store(data_dir, database_url)
    try:
        user = find_user(store, name)
        set_password(store, user["name"], _read_password(user["name"], password_stdin))
    except VoiceCheckError as exc:
        _fail(str(exc))
    _audit_user_change(store, "set-password", "password_set", user["name"])
    click.echo(f"new password set for {user['name']}; their sessions were ended")


def _audit_user_change(
    store: Any, command: str, outcome: str, target: str, detail: str | None = None
) -> None:
    """Write the audit row of a user change made on the command line.

    The same outcomes as the console's admin pages; ``method`` is ``CLI``, ``path`` the
    command, ``user_name`` the operating-system account that ran it.
    """
    import getpass
    import socket
    import time

    try:
        operator = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid
        operator = None
    store.write_audit(
        [
            {
                "time": time.time(),
                "method": "CLI",
                "path": f"voicecheck users {command}",
                "status": 0,
                "outcome": outcome,
                "user_name": operator,
                "target_user": target,
                "detail": detail,
                "worker": socket.gethostname(),
            }
        ]
    )


def _change_user(
    name: str,
    data_dir: str | None,
    database_url: str | None,
    *,
    audit_as: tuple[str, str, str | None],
    **values: Any,
):
    from .accounts import find_user

    store = _open_store(data_dir, database_url)
    try:
        user = find_user(store, name)
    except VoiceCheckError as exc:
        _fail(str(exc))
    store.update_user(user["id"], **values)
    command, outcome, detail = audit_as
    _audit_user_change(store, command, outcome, user["name"], detail)
    return store, user


@users.command("unlock")
@click.argument("name")
@store_options
def users_unlock(name: str, data_dir: str | None, database_url: str | None) -> None:
    """Unlock NAME after too many failed sign-ins."""
    _, user = _change_user(
        name,
        data_dir,
        database_url,
        audit_as=("unlock", "user_unlocked", None),
        locked_until=None,
        failed_count=0,
    )
    click.echo(f"unlocked {user['name']}")


@users.command("disable")
@click.argument("name")
@store_options
def users_disable(name: str, data_dir: str | None, database_url: str | None) -> None:
    """Stop NAME from signing in and end their sessions (their cases and notes stay)."""
    import time

    store, user = _change_user(
        name,
        data_dir,
        database_url,
        audit_as=("disable", "user_disabled", None),
        disabled_at=time.time(),
    )
    n = store.end_sessions(user_id=user["id"])
    click.echo(f"disabled {user['name']}; {n} session{'s' if n != 1 else ''} ended")


@users.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(["admin", "official", "viewer"]))
@store_options
def users_set_role(name: str, role: str, data_dir: str | None, database_url: str | None) -> None:
    """Give NAME the ROLE admin, official or viewer (open sessions get it at once)."""
    from .accounts import find_user

    store = _open_store(data_dir, database_url)
    try:
        before = find_user(store, name)["role"] or "official"
    except VoiceCheckError as exc:
        _fail(str(exc))
    _, user = _change_user(
        name,
        data_dir,
        database_url,
        audit_as=("set-role", "user_role_changed", f"role {before} -> {role}"),
        role=role,
    )
    click.echo(f"{user['name']} is now {'a' if role == 'viewer' else 'an'} {role}")


@users.command("enable")
@click.argument("name")
@store_options
def users_enable(name: str, data_dir: str | None, database_url: str | None) -> None:
    """Let a disabled user sign in again."""
    _, user = _change_user(
        name, data_dir, database_url, audit_as=("enable", "user_enabled", None), disabled_at=None
    )
    click.echo(f"enabled {user['name']}")


@click.group()
def audit() -> None:
    """Read, export and check the audit log."""


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@audit.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "jsonl"]),
    default="csv",
    show_default=True,
    help="jsonl: the hash chain, one chained row a line with its seq, prev_hash and hash.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=str),
    help="Write here instead of standard output.",
)
@click.option("--since", help="Only rows at or after this time (ISO 8601, UTC unless given).")
@click.option("--until", help="Only rows before this time.")
@click.option("--key", "key_id", help="Only rows of this key id.")
@store_options
def audit_export(
    fmt: str,
    output: str | None,
    since: str | None,
    until: str | None,
    key_id: str | None,
    data_dir: str | None,
    database_url: str | None,
) -> None:
    """Export the audit log as CSV or JSON, or its hash chain as JSON lines.

    One row per analysed file and per refused request; status is the HTTP status
    answered and outcome "ok", "queued", "duplicate" or the problem's code. Rows of
    requests that had not been answered have status 0: outcome "received" while the
    request is still being answered, "interrupted" when its worker process died first,
    "timed_out" when gunicorn stopped the worker for running past --timeout. The worker
    column names the process (host:pid) that took the request.

    With --format jsonl, the rows of the hash chain in chain order, each line holding
    the row with its seq, prev_hash and hash (see `voicecheck audit verify`); --since
    starts at the first chained row at or after that time and takes every later one,
    so that the lines link up. Rows not chained yet (in flight, or written before the
    chain began) are not in it.
    """
    from .audit import export, export_chain

    start, end = _parse_time(since), _parse_time(until)
    store = _open_store(data_dir, database_url)
    if fmt == "jsonl":
        if until or key_id:
            _fail("--until and --key would break the chain's links; jsonl takes --since only")
        try:
            first = store.first_seq_since(start) if start is not None else 1
        except VoiceCheckError as exc:
            _fail(str(exc))
        rows = store.chained_audit_rows(from_seq=first) if first is not None else iter(())
    else:
        rows = store.audit_rows(since=start, until=end, key_id=key_id)
    try:
        if output:
            with open(output, "w", encoding="utf-8", newline="") as fh:
                n = export_chain(rows, fh) if fmt == "jsonl" else export(rows, fmt, fh)
            click.echo(f"wrote {n} audit row(s) to {output}", err=True)
        elif fmt == "jsonl":
            export_chain(rows, sys.stdout)
        else:
            export(rows, fmt, sys.stdout)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror}")
    except VoiceCheckError as exc:
        _fail(str(exc))


@audit.command("verify")
@store_options
def audit_verify(data_dir: str | None, database_url: str | None) -> None:
    """Check the audit log's hash chain; exit 1 naming the first bad row.

    Every chained row's hash is recomputed and its link to the row before checked, and
    the last row is compared with the chain's head. A row edited, deleted or moved is
    reported with its id and sequence number. Rows written before the chain began are
    counted as unchained, not as tampering.
    """
    from .audit import verify

    store = _open_store(data_dir, database_url)
    try:
        report = verify(store)
    except VoiceCheckError as exc:
        _fail(str(exc))
    if not report.ok:
        _fail(report.summary())
    click.echo(report.summary())
