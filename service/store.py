"""The durable store: API keys, analyses, jobs, audit log, console users, sessions, notes.

SQLite in WAL mode with full fsync by default (one file in the data folder); any
SQLAlchemy URL otherwise, PostgreSQL when several servers share one store. Every write
is committed before the call returns, so a row the service reports exists on disk.
The one exception is the ``received`` audit row written before a request's work starts
(:meth:`Store.open_audit`): it is committed without waiting for the disk, because it
only has to outlive the server process, not the machine, and the commit that completes
it flushes both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from voicecheck.errors import VoiceCheckError

SCHEMA_VERSION = 1

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("rate_limit", sa.String(40), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("callback_url", sa.String(2000), nullable=True),
)

analyses = sa.Table(
    "analyses",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("key_id", sa.String(32), nullable=True, index=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("job_id", sa.String(40), nullable=True, index=True),
    sa.Column("job_index", sa.Integer, nullable=True),
    sa.Column("filename", sa.String(500), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("verdict", sa.String(20), nullable=True, index=True),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("model_id", sa.String(200), nullable=True),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("audio_path", sa.String(1000), nullable=True),
    sa.Column("user_id", sa.String(32), nullable=True, index=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    # the case's lifecycle in the console: a legal hold, and its deletion
    sa.Column("legal_hold_at", sa.Float, nullable=True),
    sa.Column("legal_hold_by", sa.String(200), nullable=True),
    sa.Column("deleted_at", sa.Float, nullable=True),
    sa.Column("deleted_by", sa.String(200), nullable=True),
    sa.Index("uq_analyses_key_idempotency", "key_id", "idempotency_key", unique=True),
)

audit = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False, index=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("key_id", sa.String(32), nullable=True),
    sa.Column("key_name", sa.String(200), nullable=True),
    sa.Column("client_addr", sa.String(64), nullable=True),
    sa.Column("method", sa.String(10), nullable=False),
    sa.Column("path", sa.String(500), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(60), nullable=False),
    sa.Column("filename", sa.String(500), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
    sa.Column("duration_s", sa.Float, nullable=True),
    sa.Column("processing_ms", sa.Float, nullable=True),
    sa.Column("verdict", sa.String(20), nullable=True),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("model_id", sa.String(200), nullable=True),
    sa.Column("analysis_id", sa.String(40), nullable=True),
    sa.Column("job_id", sa.String(40), nullable=True),
    sa.Column("user_name", sa.String(200), nullable=True),
    sa.Column("worker", sa.String(100), nullable=True),
    sa.Column("target_user", sa.String(200), nullable=True),  # the user an admin changed
    sa.Column("detail", sa.String(200), nullable=True),  # what changed: "role official -> viewer"
    # The hash chain (see "The hash chain" in service/audit.py); null until a row is chained.
    sa.Column("seq", sa.BigInteger, nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=True),
    sa.Column("hash", sa.String(64), nullable=True),
    sa.Index("ix_audit_key_time", "key_id", "time"),
    sa.Index("uq_audit_seq", "seq", unique=True),
)

audit_chain = sa.Table(
    "audit_chain",
    metadata,
    sa.Column("name", sa.String(20), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the last chained row's sequence
    sa.Column("hash", sa.String(64), nullable=False),  # and its hash
    sa.Column("first_id", sa.BigInteger, nullable=False),  # rows up to this id predate the chain
    sa.Column("started_at", sa.Float, nullable=False),
)
"""The head of the audit log's hash chain: one row, locked by every append."""

CHAIN = "audit"
"""The name of the audit log's row in ``audit_chain``."""

GENESIS = "0" * 64
"""The ``prev_hash`` of the first chained row."""

CHAIN_COLUMNS = ("seq", "prev_hash", "hash")
"""Columns of the audit log that the chain writes; a caller's row never sets them."""

RECEIVED = "received"
"""Outcome of an audit row whose request is still being answered (written before the work)."""

# Only requests still in flight are in this index, so keeping it costs one entry per
# request for as long as it runs, and finding a dead worker's requests reads no others.
sa.Index(
    "ix_audit_in_flight",
    audit.c.worker,
    sqlite_where=audit.c.outcome == sa.literal_column(f"'{RECEIVED}'"),
    postgresql_where=audit.c.outcome == sa.literal_column(f"'{RECEIVED}'"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=True, index=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("client_addr", sa.String(64), nullable=True),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("runner", sa.String(100), nullable=True),
    sa.Column("files", sa.Text, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("done", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("results", sa.Text, nullable=False, default="[]"),
    sa.Column("callback_url", sa.String(2000), nullable=True),
    sa.Column("callback_status", sa.String(200), nullable=True),
    sa.Column("callback_until", sa.Float, nullable=True),
    sa.Column("folder", sa.String(1000), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Index("uq_jobs_key_idempotency", "key_id", "idempotency_key", unique=True),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(300), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("password_changed_at", sa.Float, nullable=True),
    sa.Column("failed_count", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", sa.Float, nullable=True),
    sa.Column("last_sign_in_at", sa.Float, nullable=True),
    sa.Column("disabled_at", sa.Float, nullable=True),
    sa.Column("role", sa.String(20), nullable=True),  # admin, official, viewer; null reads official
    sa.Column("link_sha256", sa.String(64), nullable=True),  # one-time set-password link
    sa.Column("link_expires_at", sa.Float, nullable=True),
)

web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 of the cookie's token
    sa.Column("user_id", sa.String(32), nullable=False, index=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("client_addr", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=True),
)

case_notes = sa.Table(
    "case_notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("analysis_id", sa.String(40), nullable=False, index=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("user_id", sa.String(32), nullable=True),
    sa.Column("user_name", sa.String(200), nullable=True),
    sa.Column("text", sa.Text, nullable=False),
)

streams = sa.Table(
    "streams",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("external_id", sa.String(100), nullable=True, index=True),  # Twilio's streamSid
    sa.Column("kind", sa.String(20), nullable=False),  # "raw" or "twilio"
    sa.Column("key_id", sa.String(32), nullable=True, index=True),
    sa.Column("call_id", sa.String(200), nullable=True),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("heard_s", sa.Float, nullable=True),
    sa.Column("windows", sa.Integer, nullable=True),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("verdict", sa.String(20), nullable=True),
    sa.Column("state", sa.Text, nullable=True),
    sa.Column("analysis_id", sa.String(40), nullable=True),
    sa.Column("worker", sa.String(100), nullable=True, index=True),
    sa.Column("callback_status", sa.String(200), nullable=True),
)

meta = sa.Table(
    "voicecheck_meta",
    metadata,
    sa.Column("key", sa.String(50), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)

AUDIT_COLUMNS = [c.name for c in audit.columns]

HASHED_FLOATS = tuple(c.name for c in audit.columns if isinstance(c.type, sa.Float))
"""Audit columns holding floats, hashed as text with six decimals."""


def chain_document(row: dict[str, Any], seq: int, prev_hash: str) -> str:
    """The canonical text of an audit row that its chain hash is computed over.

    JSON with sorted keys and no spaces (UTF-8, non-ASCII kept) of the row's columns
    except ``hash``, leaving out those that are null, with ``seq`` and ``prev_hash``
    set; the float columns (:data:`HASHED_FLOATS`) are written as text with six
    decimals (``format(x, ".6f")``).
    """
    doc: dict[str, Any] = {}
    for name in AUDIT_COLUMNS:
        value = row.get(name)
        if name in CHAIN_COLUMNS or value is None:
            continue
        doc[name] = format(float(value), ".6f") if name in HASHED_FLOATS else value
    doc["seq"] = int(seq)
    doc["prev_hash"] = prev_hash
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(row: dict[str, Any], seq: int, prev_hash: str) -> str:
    """The chain hash of an audit row: SHA-256 (hex) of :func:`chain_document`."""
    return hashlib.sha256(chain_document(row, seq, prev_hash).encode("utf-8")).hexdigest()


def fit(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` made storable in ``table`` on every database.

    Text is cut to its column's length and NUL characters are dropped (PostgreSQL
    refuses both; SQLite would keep them), so that a strange file name or header never
    costs an audit row.
    """
    out = dict(values)
    for name, value in values.items():
        if not isinstance(value, str) or name not in table.c:
            continue
        value = value.replace("\x00", "")
        length = getattr(table.c[name].type, "length", None)
        out[name] = value[:length] if length else value
    return out


class StoreError(VoiceCheckError):
    """The store cannot be reached or written."""

    status = 503
    code = "store_unavailable"
    title = "Store unavailable"


def new_id(prefix: str) -> str:
    """A random, URL-safe identifier with a type prefix (``an_…``, ``job_…``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def iso(t: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC time, or None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_AUDIT_BY_ID = audit.update().where(audit.c.id == sa.bindparam("_audit_id"), audit.c.seq.is_(None))
"""Completes an audit row not chained yet; the columns set are the parameters' other keys."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # every commit reaches the disk
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_unsynced(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: safe from process death
    cursor.close()


def _server_unsynced(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit TO OFF")  # safe from client death
    cursor.close()
    dbapi_connection.commit()  # a SET rolled back would be undone


class Store:
    """The service's tables behind one engine.

    Parameters
    ----------
    url : str
        SQLAlchemy database URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        try:
            if self.is_sqlite:
                path = url.split("///", 1)[1] if "///" in url else ""
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.engine: Engine = sa.create_engine(
                    url, connect_args={"timeout": 10, "check_same_thread": False}
                )
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
            self._create()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store at {self.safe_url}: {_reason(exc)}") from None
        except (ImportError, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.safe_url}: {exc}") from None

    @property
    def safe_url(self) -> str:
        """The URL without its password."""
        return (
            self.engine.url.render_as_string(hide_password=True)
            if hasattr(self, "engine")
            else self.url
        )

    def _create(self) -> None:
        for attempt in range(5):  # several workers may create the tables at once
            try:
                metadata.create_all(self.engine)
                self._add_missing()
                with self.engine.begin() as conn:
                    row = conn.execute(
                        sa.select(meta.c.value).where(meta.c.key == "schema")
                    ).first()
                    if row is None:
                        conn.execute(meta.insert().values(key="schema", value=str(SCHEMA_VERSION)))
                    elif int(row[0]) > SCHEMA_VERSION:
                        raise StoreError(
                            f"the store at {self.safe_url} has schema {row[0]}, newer than this "
                            f"voicecheck's {SCHEMA_VERSION}; upgrade voicecheck"
                        )
                    self._start_chain(conn)
                return
            except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _add_missing(self) -> None:
        """Bring a store made by an earlier version up to date: add new columns and indexes.

        Columns are only ever added (nullable, so old rows stay valid), never changed or
        dropped; a store written by this version stays readable by the one before.
        """
        inspector = sa.inspect(self.engine)
        with self.engine.begin() as conn:
            for table in metadata.sorted_tables:
                present = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name in present:
                        continue
                    if not column.nullable:
                        raise StoreError(
                            f"the store at {self.safe_url} lacks the required column "
                            f"{table.name}.{column.name}; it was made by an unknown version"
                        )
                    kind = column.type.compile(dialect=self.engine.dialect)
                    conn.execute(
                        sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )
        for table in metadata.sorted_tables:
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)

    @staticmethod
    def _start_chain(conn: Connection) -> None:
        """Make the audit chain's head if the store has none (a new or an upgraded store).

        Rows already in the log then predate the chain: they stay unchained, and
        ``first_id`` marks them as such.
        """
        if conn.execute(sa.select(audit_chain.c.seq).where(audit_chain.c.name == CHAIN)).first():
            return
        first_id = conn.execute(sa.select(sa.func.max(audit.c.id))).scalar() or 0
        conn.execute(
            audit_chain.insert().values(
                name=CHAIN, seq=0, hash=GENESIS, first_id=int(first_id), started_at=time.time()
            )
        )

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction, committed on leaving the block."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"the store failed: {_reason(exc)}") from None

    def ping(self) -> None:
        """Raise StoreError unless the store answers a query."""
        with self.begin() as conn:
            conn.execute(sa.select(sa.literal(1)))

    def dispose(self) -> None:
        """Close every pooled connection (after a fork, or at shutdown)."""
        self.engine.dispose()
        if "_unsynced" in vars(self):
            self._unsynced.dispose()

    @functools.cached_property
    def _unsynced(self) -> Engine:
        """Connections whose commits do not wait for the disk (see :meth:`open_audit`)."""
        path = self.url.split("///", 1)[1] if "///" in self.url else ""
        if self.is_sqlite and (not path or path == ":memory:" or "mode=memory" in self.url):
            return self.engine  # a database in memory exists only behind its own engine
        if self.is_sqlite:
            engine = sa.create_engine(
                self.url, connect_args={"timeout": 10, "check_same_thread": False}
            )
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "connect", _sqlite_unsynced)
        else:
            engine = sa.create_engine(self.url, pool_pre_ping=True)
            sa.event.listen(engine, "connect", _server_unsynced)
        return engine

    # --- audit log -------------------------------------------------------------------

    def write_audit(
        self, rows: Sequence[dict[str, Any]], *, conn: Connection | None = None
    ) -> None:
        """Append audit rows, or complete ``received`` ones, committed before returning.

        A row that carries the ``id`` of a row written by :meth:`open_audit` completes
        that row in place: its values other than ``time`` (when the request arrived)
        replace the stored ones, except where they are None. Other rows are appended.
        """
        if not rows:
            return
        if conn is not None:
            self._write_audit(rows, conn)
            return
        with self.begin() as c:
            self._write_audit(rows, c)

    def _write_audit(self, rows: Sequence[dict[str, Any]], conn: Connection) -> None:
        written = []
        for r in rows:
            if r.get("id") is not None:
                values = {
                    k: v
                    for k, v in r.items()
                    if k in AUDIT_COLUMNS
                    and k not in ("id", "time", *CHAIN_COLUMNS)
                    and v is not None
                }
                # Parameters rather than .values(): one cached statement per set of columns.
                done = conn.execute(_AUDIT_BY_ID, {**fit(audit, values), "_audit_id": r["id"]})
                if done.rowcount == 1:
                    written.append(r["id"])
                    continue
            values = {k: r.get(k) for k in AUDIT_COLUMNS if k not in ("id", *CHAIN_COLUMNS)}
            written.append(
                int(conn.execute(audit.insert(), fit(audit, values)).inserted_primary_key[0])
            )
        self._chain(conn, written)

    def _chain(self, conn: Connection, ids: Sequence[int]) -> None:
        """Give the audit rows ``ids`` that are complete their place in the hash chain.

        Appends are serialised by writing the chain's head first: on SQLite that write
        takes the database's write lock, on PostgreSQL the head row's lock, both held
        until the transaction ends, so no two transactions chain at once. Rows still
        ``received``, or chained already, are left as they are.
        """
        if not ids:
            return
        conn.execute(
            audit_chain.update().where(audit_chain.c.name == CHAIN).values(seq=audit_chain.c.seq)
        )
        head = conn.execute(
            sa.select(audit_chain.c.seq, audit_chain.c.hash)
            .where(audit_chain.c.name == CHAIN)
            .with_for_update()
        ).one()
        seq, prev = int(head.seq), head.hash
        rows = conn.execute(
            sa.select(audit).where(audit.c.id.in_(sorted(set(ids)))).order_by(audit.c.id)
        ).all()
        for r in rows:
            row = dict(r._mapping)
            if row["seq"] is not None or row["outcome"] == RECEIVED:
                continue
            seq += 1
            digest = chain_hash(row, seq, prev)
            conn.execute(
                audit.update()
                .where(audit.c.id == row["id"])
                .values(seq=seq, prev_hash=prev, hash=digest)
            )
            prev = digest
        if seq != head.seq:
            conn.execute(
                audit_chain.update().where(audit_chain.c.name == CHAIN).values(seq=seq, hash=prev)
            )

    def open_audit(self, row: dict[str, Any]) -> int:
        """Write the ``received`` audit row of a request before its work starts; its id.

        The commit does not wait for the disk (SQLite ``synchronous=NORMAL``, PostgreSQL
        ``synchronous_commit=off``, on connections kept for this): the row survives the
        server process being killed, and the commit that completes it (through
        :meth:`write_audit`, fully synchronous) makes both durable. A power cut before
        then may lose it, together with a request that was never answered.
        """
        values = fit(
            audit, {k: row.get(k) for k in AUDIT_COLUMNS if k not in ("id", *CHAIN_COLUMNS)}
        )
        values["outcome"] = RECEIVED
        try:
            with self._unsynced.begin() as conn:
                result = conn.execute(audit.insert(), values)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"the store failed: {_reason(exc)}") from None
        return int(result.inserted_primary_key[0])

    def in_flight_workers(self) -> list[str]:
        """The workers (``host:pid``) that have audit rows still ``received``."""
        q = sa.select(audit.c.worker).where(_in_flight()).distinct()
        with self.begin() as conn:
            return [w for (w,) in conn.execute(q) if w is not None]

    def end_in_flight(self, worker: str, outcome: str) -> int:
        """Give ``worker``'s audit rows still ``received`` the ``outcome``; how many there were.

        For a worker process that ended without answering them (killed, timed out).
        The rows are chained with their new outcome.
        """
        with self.begin() as conn:
            ids = [
                i
                for (i,) in conn.execute(
                    sa.select(audit.c.id).where(audit.c.worker == worker, _in_flight())
                )
            ]
            if not ids:
                return 0
            n = conn.execute(
                audit.update()
                .where(audit.c.id.in_(ids), _in_flight(), audit.c.seq.is_(None))
                .values(outcome=outcome)
            ).rowcount
            self._chain(conn, ids)
            return n

    def audit_rows(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        key_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Audit rows in time order, each a dict keyed by column name."""
        q = sa.select(audit).order_by(audit.c.id)
        if since is not None:
            q = q.where(audit.c.time >= since)
        if until is not None:
            q = q.where(audit.c.time < until)
        if key_id is not None:
            q = q.where(audit.c.key_id == key_id)
        if limit is not None:
            q = q.limit(limit)
        with self.begin() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        yield from rows

    def count_recent(self, key_id: str, since: float) -> tuple[int, float | None]:
        """How many counted audit rows ``key_id`` has since ``since``, and the oldest one's time."""
        q = sa.select(sa.func.count(), sa.func.min(audit.c.time)).where(
            audit.c.key_id == key_id,
            audit.c.time >= since,
            audit.c.status != 429,
            audit.c.method != "JOB",  # files a job analyses later were counted when submitted
        )
        with self.begin() as conn:
            n, oldest = conn.execute(q).one()
        return int(n), oldest

    def audit_chain_head(self) -> dict[str, Any]:
        """The audit chain's head: last ``seq`` and ``hash``, ``first_id``, ``started_at``."""
        with self.begin() as conn:
            row = conn.execute(sa.select(audit_chain).where(audit_chain.c.name == CHAIN)).one()
        return dict(row._mapping)

    def chained_audit_rows(self, *, from_seq: int = 1) -> Iterator[dict[str, Any]]:
        """The chained audit rows from sequence ``from_seq`` on, in chain order, in batches."""
        q = (
            sa.select(audit)
            .where(audit.c.seq.is_not(None), audit.c.seq >= from_seq)
            .order_by(audit.c.seq, audit.c.id)
        )
        with self.begin() as conn:
            for r in conn.execution_options(yield_per=1000).execute(q):
                yield dict(r._mapping)

    def audit_row_by_hash(self, digest: str) -> dict[str, Any] | None:
        """The chained audit row whose hash is ``digest``, or None."""
        with self.begin() as conn:
            row = conn.execute(sa.select(audit).where(audit.c.hash == digest).limit(1)).first()
        return dict(row._mapping) if row else None

    def unchained_audit(self, first_id: int, *, limit: int = 5) -> dict[str, Any]:
        """The audit rows outside the chain, by kind.

        ``legacy``: how many predate the chain (id up to ``first_id``); ``in_flight``: how
        many later ones are still ``received``; ``outside``: the ids (up to ``limit``) and
        ``outside_count`` of later, complete rows that are not chained.
        """
        unchained = audit.c.seq.is_(None)
        later = sa.and_(unchained, audit.c.id > first_id)
        with self.begin() as conn:
            legacy = conn.execute(
                sa.select(sa.func.count()).where(unchained, audit.c.id <= first_id)
            ).scalar()
            in_flight = conn.execute(sa.select(sa.func.count()).where(later, _in_flight())).scalar()
            outside_where = sa.and_(later, audit.c.outcome != RECEIVED)
            outside_count = conn.execute(sa.select(sa.func.count()).where(outside_where)).scalar()
            outside = [
                i
                for (i,) in conn.execute(
                    sa.select(audit.c.id).where(outside_where).order_by(audit.c.id).limit(limit)
                )
            ]
        return {
            "legacy": int(legacy or 0),
            "in_flight": int(in_flight or 0),
            "outside": outside,
            "outside_count": int(outside_count or 0),
        }

    def first_seq_since(self, since: float) -> int | None:
        """The lowest sequence of a chained audit row at or after ``since``, or None."""
        q = sa.select(sa.func.min(audit.c.seq)).where(
            audit.c.seq.is_not(None), audit.c.time >= since
        )
        with self.begin() as conn:
            seq = conn.execute(q).scalar()
        return int(seq) if seq is not None else None

    def case_audit_rows(self, analysis_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """The audit rows of one analysis (its ``analysis_id``), in chain order, then by id."""
        q = (
            sa.select(audit)
            .where(audit.c.analysis_id == analysis_id)
            .order_by(audit.c.seq.is_(None), audit.c.seq, audit.c.id)
            .limit(limit)
        )
        with self.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # --- analyses --------------------------------------------------------------------

    def save_analysis(self, row: dict[str, Any], audit_row: dict[str, Any]) -> None:
        """Store one analysis and its audit row in one transaction."""
        with self.begin() as conn:
            conn.execute(analyses.insert(), fit(analyses, row))
            self.write_audit([audit_row], conn=conn)

    def find_analysis(self, key_id: str, idempotency_key: str) -> dict[str, Any] | None:
        """The analysis ``key_id`` asked for with ``idempotency_key``, or None."""
        q = sa.select(analyses).where(
            analyses.c.key_id == key_id, analyses.c.idempotency_key == idempotency_key
        )
        with self.begin() as conn:
            row = conn.execute(q).first()
        return dict(row._mapping) if row else None

    def get_analysis(self, analysis_id: str) -> dict[str, Any] | None:
        """One stored analysis row, or None."""
        with self.begin() as conn:
            row = conn.execute(sa.select(analyses).where(analyses.c.id == analysis_id)).first()
        return dict(row._mapping) if row else None

    def job_analyses(self, job_id: str) -> dict[int, dict[str, Any]]:
        """The analyses a job has stored so far, by file index."""
        with self.begin() as conn:
            rows = conn.execute(sa.select(analyses).where(analyses.c.job_id == job_id)).all()
        return {r.job_index: dict(r._mapping) for r in rows}

    # --- keys ------------------------------------------------------------------------

    def add_key(self, row: dict[str, Any]) -> None:
        """Store a new API key row."""
        with self.begin() as conn:
            conn.execute(api_keys.insert().values(**fit(api_keys, row)))

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        """One key row by its public id, or None."""
        with self.begin() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        return dict(row._mapping) if row else None

    def last_used(self) -> dict[str, float]:
        """The time of each key's latest audit row, by key id."""
        q = sa.select(audit.c.key_id, sa.func.max(audit.c.time)).group_by(audit.c.key_id)
        with self.begin() as conn:
            return {k: t for k, t in conn.execute(q) if k is not None}

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key row, oldest first."""
        with self.begin() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
        return [dict(r._mapping) for r in rows]

    def find_keys(self, id_or_name: str) -> list[dict[str, Any]]:
        """Keys whose id or name is ``id_or_name``."""
        q = sa.select(api_keys).where(
            sa.or_(api_keys.c.id == id_or_name, api_keys.c.name == id_or_name)
        )
        with self.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def set_key_callback(self, key_id: str, url: str | None) -> bool:
        """Set (or clear) the URL a key's live-stream results are POSTed to."""
        with self.begin() as conn:
            result = conn.execute(
                api_keys.update().where(api_keys.c.id == key_id).values(callback_url=url)
            )
        return result.rowcount == 1

    def revoke_key(self, key_id: str, when: float) -> bool:
        """Revoke a key; False when it was already revoked or does not exist."""
        with self.begin() as conn:
            result = conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=when)
            )
        return result.rowcount == 1

    # --- jobs ------------------------------------------------------------------------

    def add_job(self, row: dict[str, Any], audit_row: dict[str, Any]) -> None:
        """Store a new job and the audit row of its submission in one transaction."""
        with self.begin() as conn:
            conn.execute(jobs.insert().values(**fit(jobs, row)))
            self.write_audit([audit_row], conn=conn)

    def find_job(self, key_id: str, idempotency_key: str) -> dict[str, Any] | None:
        """The job ``key_id`` submitted with ``idempotency_key``, or None."""
        q = sa.select(jobs).where(
            jobs.c.key_id == key_id, jobs.c.idempotency_key == idempotency_key
        )
        with self.begin() as conn:
            row = conn.execute(q).first()
        return dict(row._mapping) if row else None

    def cancel_job(self, job_id: str, when: float) -> bool:
        """Cancel a queued or running job; False when it had already finished."""
        with self.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(["queued", "running"]))
                .values(status="cancelled", finished_at=when, runner=None, lease_until=None)
            )
        return result.rowcount == 1

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """One job row, or None."""
        with self.begin() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def claim_job(self, runner: str, now: float, lease_s: float) -> dict[str, Any] | None:
        """Take the oldest queued job, or a running one whose lease ran out; None if none."""
        with self.begin() as conn:
            candidates = conn.execute(
                sa.select(jobs.c.id)
                .where(
                    sa.or_(
                        jobs.c.status == "queued",
                        sa.and_(jobs.c.status == "running", jobs.c.lease_until < now),
                    )
                )
                .order_by(jobs.c.created_at)
                .limit(5)
            ).all()
        for (job_id,) in candidates:
            with self.begin() as conn:
                taken = conn.execute(
                    jobs.update()
                    .where(
                        jobs.c.id == job_id,
                        sa.or_(
                            jobs.c.status == "queued",
                            sa.and_(jobs.c.status == "running", jobs.c.lease_until < now),
                        ),
                    )
                    .values(
                        status="running",
                        runner=runner,
                        lease_until=now + lease_s,
                        started_at=sa.func.coalesce(jobs.c.started_at, now),
                    )
                )
            if taken.rowcount == 1:
                return self.get_job(job_id)
        return None

    def update_job(self, job_id: str, *, held_by: str | None = None, **values: Any) -> bool:
        """Update a job; with ``held_by``, only while that runner still holds it."""
        q = jobs.update().where(jobs.c.id == job_id)
        if held_by is not None:
            q = q.where(jobs.c.runner == held_by)
        with self.begin() as conn:
            return conn.execute(q.values(**fit(jobs, values))).rowcount == 1

    def job_file_done(
        self,
        job_id: str,
        runner: str,
        *,
        index: int,
        result: dict[str, Any],
        analysis: dict[str, Any] | None,
        audit_row: dict[str, Any],
        lease_until: float,
    ) -> bool:
        """Record one finished file of a job (its analysis, audit row and progress) at once."""
        with self.begin() as conn:
            row = conn.execute(
                sa.select(jobs.c.results, jobs.c.runner).where(jobs.c.id == job_id)
            ).first()
            if row is None or row.runner != runner:
                return False
            results = json.loads(row.results)
            results = [r for r in results if r.get("index") != index] + [result]
            results.sort(key=lambda r: r["index"])
            if analysis is not None:
                conn.execute(analyses.insert().values(**fit(analyses, analysis)))
            self.write_audit([audit_row], conn=conn)
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(
                    results=json.dumps(results),
                    done=len(results),
                    failed=sum(1 for r in results if "error" in r),
                    lease_until=lease_until,
                )
            )
        return True

    def pending_callbacks(self, now: float) -> list[dict[str, Any]]:
        """Finished jobs whose callback is due: never claimed, or claimed by a process that died."""
        q = sa.select(jobs).where(
            jobs.c.status.in_(["done", "failed"]),
            jobs.c.callback_url.is_not(None),
            sa.or_(
                jobs.c.callback_status.is_(None),
                sa.and_(jobs.c.callback_status == "delivering", jobs.c.callback_until < now),
            ),
        )
        with self.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def claim_callback(self, job_id: str, now: float, hold_s: float) -> bool:
        """Take the delivery of a job's callback for ``hold_s`` seconds; False if another has it."""
        with self.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.callback_url.is_not(None),
                    sa.or_(
                        jobs.c.callback_status.is_(None),
                        sa.and_(
                            jobs.c.callback_status == "delivering", jobs.c.callback_until < now
                        ),
                    ),
                )
                .values(callback_status="delivering", callback_until=now + hold_s)
            )
        return result.rowcount == 1

    def delete_old_audio(self, before: float) -> list[str]:
        """Forget retained audio of analyses older than ``before``, except those on legal hold.

        Returns the paths no analysis refers to any more (the same recording sent again
        later keeps its file).
        """
        with self.begin() as conn:
            rows = conn.execute(
                sa.select(analyses.c.id, analyses.c.audio_path).where(
                    analyses.c.audio_path.is_not(None),
                    analyses.c.created_at < before,
                    analyses.c.legal_hold_at.is_(None),  # a case under legal hold keeps it
                )
            ).all()
            if rows:
                conn.execute(
                    analyses.update()
                    .where(analyses.c.id.in_([r.id for r in rows]))
                    .values(audio_path=None)
                )
            paths = sorted({r.audio_path for r in rows})
            still = set()
            if paths:
                still = {
                    r.audio_path
                    for r in conn.execute(
                        sa.select(analyses.c.audio_path).where(analyses.c.audio_path.in_(paths))
                    )
                }
        return [p for p in paths if p not in still]

    # --- case lifecycle: legal hold and deletion ---------------------------------------

    def set_legal_hold(
        self,
        analysis_id: str,
        *,
        held: bool,
        by: str,
        when: float,
        audit_row: dict[str, Any],
    ) -> bool:
        """Put a case under legal hold or release it, with its audit row, at once.

        False (and nothing written) when the case does not exist or was deleted.
        """
        values = {"legal_hold_at": when if held else None, "legal_hold_by": by if held else None}
        with self.begin() as conn:
            done = conn.execute(
                analyses.update()
                .where(analyses.c.id == analysis_id, analyses.c.deleted_at.is_(None))
                .values(**fit(analyses, values))
            ).rowcount
            if done != 1:
                return False
            self.write_audit([audit_row], conn=conn)
        return True

    def delete_case(
        self, analysis_id: str, *, by: str, when: float, audit_row: dict[str, Any]
    ) -> tuple[str, list[str]]:
        """Reduce a case to its hash, verdict and score, with its audit row, at once.

        The file name, result, retained-audio path and notes are cleared; who deleted it
        and when are kept. Returns ``(outcome, paths)``: outcome ``deleted``, ``held``
        (under legal hold: nothing changed), ``gone`` (deleted already) or ``missing``;
        ``paths`` is the case's retained audio when no other analysis still refers to
        it (the caller deletes those files and their renders).
        """
        with self.begin() as conn:
            row = conn.execute(
                sa.select(
                    analyses.c.audio_path, analyses.c.legal_hold_at, analyses.c.deleted_at
                ).where(analyses.c.id == analysis_id)
            ).first()
            if row is None:
                return "missing", []
            if row.deleted_at is not None:
                return "gone", []
            if row.legal_hold_at is not None:
                return "held", []
            done = conn.execute(
                analyses.update()
                .where(
                    analyses.c.id == analysis_id,
                    analyses.c.deleted_at.is_(None),
                    analyses.c.legal_hold_at.is_(None),
                )
                .values(
                    **fit(
                        analyses,
                        {
                            "filename": None,
                            "result": "{}",
                            "size_bytes": 0,
                            "audio_path": None,
                            "model_id": None,
                            "request_id": None,
                            "idempotency_key": None,
                            "deleted_at": when,
                            "deleted_by": by,
                        },
                    )
                )
            ).rowcount
            if done != 1:  # held or deleted in the meantime
                return "gone", []
            conn.execute(case_notes.delete().where(case_notes.c.analysis_id == analysis_id))
            self.write_audit([audit_row], conn=conn)
            paths = []
            if row.audio_path:
                still = conn.execute(
                    sa.select(sa.func.count()).where(analyses.c.audio_path == row.audio_path)
                ).scalar()
                if not still:
                    paths.append(row.audio_path)
        return "deleted", paths

    # --- live streams ------------------------------------------------------------------

    def open_stream(self, row: dict[str, Any]) -> None:
        """Store a new live stream.

        Its state is written as it goes without waiting for the disk (like a ``received``
        audit row); :meth:`finish_stream` writes the end fully synchronised.
        """
        try:
            with self._unsynced.begin() as conn:
                conn.execute(streams.insert(), fit(streams, row))
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"the store failed: {_reason(exc)}") from None

    def update_streams(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write the live state of several streams at once (each dict names its ``id``)."""
        if not rows:
            return
        try:
            with self._unsynced.begin() as conn:
                for r in rows:
                    values = {k: v for k, v in r.items() if k != "id"}
                    conn.execute(
                        streams.update()
                        .where(streams.c.id == r["id"])
                        .values(**fit(streams, values))
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"the store failed: {_reason(exc)}") from None

    def get_stream(self, ident: str) -> dict[str, Any] | None:
        """A stream by its id, or by the carrier's id (Twilio's ``streamSid``), newest first."""
        with self.begin() as conn:
            row = conn.execute(sa.select(streams).where(streams.c.id == ident)).first()
            if row is None:
                row = conn.execute(
                    sa.select(streams)
                    .where(streams.c.external_id == ident)
                    .order_by(streams.c.started_at.desc())
                    .limit(1)
                ).first()
        return dict(row._mapping) if row else None

    def finish_stream(
        self,
        stream: dict[str, Any],
        analysis: dict[str, Any] | None,
        audit_row: dict[str, Any],
    ) -> None:
        """Store a finished stream: final state, analysis (if any), audit row, at once."""
        with self.begin() as conn:
            if analysis is not None:
                conn.execute(analyses.insert(), fit(analyses, analysis))
            self.write_audit([audit_row], conn=conn)
            values = {k: v for k, v in stream.items() if k != "id"}
            conn.execute(
                streams.update().where(streams.c.id == stream["id"]).values(**fit(streams, values))
            )

    def count_open_streams(self, key_id: str, up_to: int) -> int:
        """How many streams ``key_id`` has open, up to the one whose audit row is ``up_to``.

        Open streams are those whose audit row is still ``received`` on a stream path.
        """
        q = sa.select(sa.func.count()).where(
            _in_flight(),
            audit.c.key_id == key_id,
            audit.c.path.like("/v1/streams%"),
            audit.c.id <= up_to,
        )
        with self.begin() as conn:
            return int(conn.execute(q).scalar() or 0)

    def end_streams(self, worker: str, status: str, now: float) -> int:
        """Give the live streams of ``worker`` (a process that ended) the ``status``."""
        with self.begin() as conn:
            return conn.execute(
                streams.update()
                .where(streams.c.worker == worker, streams.c.status == "live")
                .values(status=status, ended_at=now, updated_at=now)
            ).rowcount

    # --- console users, sessions and case notes ----------------------------------------

    def add_user(self, row: dict[str, Any]) -> None:
        """Create a console user; StoreError when the name is taken."""
        try:
            with self.engine.begin() as conn:
                conn.execute(users.insert().values(**fit(users, row)))
        except sa.exc.IntegrityError:
            raise StoreError(f"a user named {row['name']!r} exists already") from None
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"the store failed: {_reason(exc)}") from None

    def get_user(self, *, user_id: str | None = None, name: str | None = None) -> dict | None:
        """One user by id or by name, or None."""
        q = sa.select(users)
        q = q.where(users.c.id == user_id) if user_id is not None else q.where(users.c.name == name)
        with self.begin() as conn:
            row = conn.execute(q).first()
        return dict(row._mapping) if row else None

    def list_users(self) -> list[dict[str, Any]]:
        """Every console user, oldest first."""
        with self.begin() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.created_at)).all()
        return [dict(r._mapping) for r in rows]

    def update_user(self, user_id: str, **values: Any) -> bool:
        """Change a user's columns; False when there is no such user."""
        with self.begin() as conn:
            result = conn.execute(users.update().where(users.c.id == user_id).values(**values))
        return result.rowcount == 1

    def sign_in_failed(self, user_id: str, now: float, *, max_failures: int, lock_s: float) -> int:
        """Count a failed sign-in (atomically); lock the user at ``max_failures``.

        Returns the failures counted so far.
        """
        with self.begin() as conn:
            conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(failed_count=sa.func.coalesce(users.c.failed_count, 0) + 1)
            )
            n = conn.execute(sa.select(users.c.failed_count).where(users.c.id == user_id)).scalar()
            if n is not None and n >= max_failures:
                conn.execute(
                    users.update()
                    .where(users.c.id == user_id)
                    .values(locked_until=now + lock_s, failed_count=0)
                )
        return int(n or 0)

    def add_session(self, row: dict[str, Any]) -> None:
        """Store a signed-in session."""
        with self.begin() as conn:
            conn.execute(web_sessions.insert().values(**fit(web_sessions, row)))

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """A session with its user's name and state, or None."""
        q = (
            sa.select(
                web_sessions,
                users.c.name.label("user_name"),
                users.c.disabled_at.label("user_disabled_at"),
                users.c.role.label("user_role"),
            )
            .join(users, users.c.id == web_sessions.c.user_id)
            .where(web_sessions.c.id == session_id)
        )
        with self.begin() as conn:
            row = conn.execute(q).first()
        return dict(row._mapping) if row else None

    def touch_session(self, session_id: str, now: float) -> None:
        """Record a session's latest use."""
        with self.begin() as conn:
            conn.execute(
                web_sessions.update().where(web_sessions.c.id == session_id).values(last_seen=now)
            )

    def end_sessions(self, *, session_id: str | None = None, user_id: str | None = None) -> int:
        """Delete one session, or all of a user's; returns how many ended."""
        q = web_sessions.delete()
        if session_id is not None:
            q = q.where(web_sessions.c.id == session_id)
        elif user_id is not None:
            q = q.where(web_sessions.c.user_id == user_id)
        else:
            raise ValueError("name a session or a user")
        with self.begin() as conn:
            return conn.execute(q).rowcount

    def end_expired_sessions(self, now: float, idle_before: float) -> int:
        """Delete sessions past their end or unused since ``idle_before``."""
        with self.begin() as conn:
            return conn.execute(
                web_sessions.delete().where(
                    sa.or_(web_sessions.c.expires_at < now, web_sessions.c.last_seen < idle_before)
                )
            ).rowcount

    def add_note(self, row: dict[str, Any], audit_row: dict[str, Any]) -> int:
        """Add a note to a case together with its audit row; returns the note's id."""
        with self.begin() as conn:
            result = conn.execute(case_notes.insert().values(**fit(case_notes, row)))
            self.write_audit([audit_row], conn=conn)
            return int(result.inserted_primary_key[0])

    def notes(self, analysis_id: str) -> list[dict[str, Any]]:
        """A case's notes, oldest first."""
        q = (
            sa.select(case_notes)
            .where(case_notes.c.analysis_id == analysis_id)
            .order_by(case_notes.c.id)
        )
        with self.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def same_recording(self, sha256: str, *, exclude: str) -> list[dict[str, Any]]:
        """Other console analyses of the same bytes (same sha256), oldest first."""
        q = (
            sa.select(
                analyses.c.id,
                analyses.c.created_at,
                analyses.c.filename,
                analyses.c.verdict,
                analyses.c.score,
                users.c.name.label("user_name"),
            )
            .select_from(analyses.outerjoin(users, users.c.id == analyses.c.user_id))
            .where(
                analyses.c.sha256 == sha256,
                analyses.c.id != exclude,
                analyses.c.user_id.is_not(None),
            )
            .order_by(analyses.c.created_at)
            .limit(100)
        )
        with self.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def use_link(self, digest: str, now: float, **values: Any) -> dict[str, Any] | None:
        """Spend a one-time set-password link: set ``values`` on its user and void it.

        Returns the user as it was, or None when no live link has this sha256 (unknown,
        expired or used already); of two requests with one link only one succeeds.
        """
        with self.begin() as conn:
            row = conn.execute(
                sa.select(users).where(users.c.link_sha256 == digest, users.c.link_expires_at > now)
            ).first()
            if row is None:
                return None
            done = conn.execute(
                users.update()
                .where(users.c.id == row.id, users.c.link_sha256 == digest)
                .values(link_sha256=None, link_expires_at=None, **values)
            )
        return dict(row._mapping) if done.rowcount == 1 else None

    def partner_analyses(
        self, *, key_ids: list[str] | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """Analyses made with an API key, newest first; returns (one page, how many match).

        Each row carries ``key_name`` and ``console_count``: how many console cases
        (analyses with a user) are of the same recording (same sha256).
        """
        where = [analyses.c.key_id.is_not(None)]
        if key_ids is not None:
            where.append(analyses.c.key_id.in_(key_ids))
        twin = analyses.alias("twin")
        console_count = (
            sa.select(sa.func.count())
            .where(twin.c.sha256 == analyses.c.sha256, twin.c.user_id.is_not(None))
            .scalar_subquery()
            .label("console_count")
        )
        q = (
            sa.select(
                analyses.c.id,
                analyses.c.created_at,
                analyses.c.key_id,
                analyses.c.filename,
                analyses.c.sha256,
                analyses.c.verdict,
                analyses.c.score,
                api_keys.c.name.label("key_name"),
                console_count,
            )
            .select_from(analyses.outerjoin(api_keys, api_keys.c.id == analyses.c.key_id))
            .where(*where)
            .order_by(analyses.c.created_at.desc(), analyses.c.id)
            .offset(offset)
            .limit(limit)
        )
        return self._analyses_page(q, where)

    def _analyses_page(
        self, q: sa.Select, where: Sequence[Any]
    ) -> tuple[list[dict[str, Any]], int]:
        """The rows of the page query ``q``, and how many analyses ``where`` selects in all."""
        count = sa.select(sa.func.count()).select_from(analyses).where(*where)
        with self.begin() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
            total = int(conn.execute(count).scalar() or 0)
        return rows, total

    def partner_recording(self, sha256: str) -> list[dict[str, Any]]:
        """Analyses of the same bytes (same sha256) made with an API key, oldest first."""
        q = (
            sa.select(
                analyses.c.id,
                analyses.c.created_at,
                analyses.c.verdict,
                analyses.c.score,
                api_keys.c.name.label("key_name"),
            )
            .select_from(analyses.outerjoin(api_keys, api_keys.c.id == analyses.c.key_id))
            .where(analyses.c.sha256 == sha256, analyses.c.key_id.is_not(None))
            .order_by(analyses.c.created_at)
            .limit(100)
        )
        with self.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def find_cases(
        self,
        *,
        text: str | None = None,
        verdict: str | None = None,
        since: float | None = None,
        until: float | None = None,
        user_id: str | None = None,
        console_only: bool = True,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """Analyses newest first, filtered; returns (one page of rows, how many match).

        ``text`` matches part of the file name (any case) or the start of the sha256.
        Each row carries ``note_count``.
        """
        where = []
        if console_only:
            where.append(analyses.c.user_id.is_not(None))
        if user_id is not None:
            where.append(analyses.c.user_id == user_id)
        if verdict:
            where.append(analyses.c.verdict == verdict)
        if since is not None:
            where.append(analyses.c.created_at >= since)
        if until is not None:
            where.append(analyses.c.created_at < until)
        if text:
            pattern = (
                "%"
                + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            where.append(
                sa.or_(
                    sa.func.lower(analyses.c.filename).like(pattern, escape="\\"),
                    analyses.c.sha256.like(text.lower().strip() + "%"),
                )
            )
        n_notes = (
            sa.select(sa.func.count())
            .where(case_notes.c.analysis_id == analyses.c.id)
            .scalar_subquery()
            .label("note_count")
        )
        cols = [c for c in analyses.c if c.name != "result"]
        q = (
            sa.select(*cols, users.c.name.label("user_name"), n_notes)
            .select_from(analyses.outerjoin(users, users.c.id == analyses.c.user_id))
            .where(*where)
            .order_by(analyses.c.created_at.desc(), analyses.c.id)
            .offset(offset)
            .limit(limit)
        )
        return self._analyses_page(q, where)


def _in_flight() -> sa.ColumnElement[bool]:
    # A literal, not a bound parameter, so that both databases see the condition of the
    # partial index ix_audit_in_flight and use it.
    return audit.c.outcome == sa.literal_column(f"'{RECEIVED}'")


def _reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).strip().splitlines()[0]
