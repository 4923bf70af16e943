"""The store and the service on a real PostgreSQL server.

A throwaway cluster is made with the ``initdb`` and ``pg_ctl`` of the Debian package
``postgresql`` (under ``/usr/lib/postgresql/<version>/bin``), listens on a free loopback
port with trust authentication, and is stopped when the module's tests are done. Each
test gets a database of its own.
"""

from __future__ import annotations

import csv
import io
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from voicecheck.service.store import StoreError

pytestmark = pytest.mark.slow

psycopg = pytest.importorskip("psycopg", reason="psycopg is missing: pip install -e '.[dev]'")

PG_PACKAGE = "postgresql"  # the Debian package that ships initdb, pg_ctl and the server
START_TIMEOUT_S = 30


def _pg_bindir() -> Path | None:
    """The newest PostgreSQL bin folder that has both initdb and pg_ctl, or None."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit())

    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A running throwaway cluster on 127.0.0.1."""

    port: int

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def create_database(self) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        name = f"vc_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    """Start a PostgreSQL cluster in a temporary folder; stop it at the end, whatever happens."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            f"PostgreSQL server binaries (initdb, pg_ctl) not found under "
            f"/usr/lib/postgresql/*/bin: install the Debian package {PG_PACKAGE!r}"
        )
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as the package's user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"no 'postgres' OS user to run the server: install {PG_PACKAGE!r}")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("runuser (util-linux) is needed to run PostgreSQL as its own user")
        prefix = [runuser, "-u", "postgres", "--"]

    # Not under pytest's tmp_path: its parent folders are private to root.
    folder = Path(tempfile.mkdtemp(prefix="voicecheck-pg-"))
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data = folder / "data"
    log = folder / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*prefix, *args],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop() -> None:
        if (data / "postmaster.pid").exists():
            run(str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w")

    try:
        done = run(
            str(bindir / "initdb"),
            "-D", str(data),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        port = 0
        for _attempt in range(3):  # another process may take the free port first
            port = _free_port()
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            done = run(
                str(bindir / "pg_ctl"),
                "start",
                "-D", str(data),
                "-l", str(log),
                "-w",
                "-t", str(START_TIMEOUT_S),
                "-o", options,
                timeout=START_TIMEOUT_S + 10,
            )  # fmt: skip
            if done.returncode == 0:
                break
            stop()
        else:
            text = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"PostgreSQL did not start:\n{done.stdout}\n{done.stderr}\n{text}")
        server = PgServer(port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with server.connect() as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        try:
            stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The SQLAlchemy URL of a fresh database on the throwaway server."""
    return pg_server.create_database()


def _connect_db(url: str) -> psycopg.Connection:
    """A psycopg connection to the database of a ``postgresql+psycopg://`` URL."""
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _job_row(job_id: str, now: float, folder: str) -> dict:
    return {
        "id": job_id,
        "key_id": None,
        "request_id": None,
        "client_addr": "127.0.0.1",
        "status": "queued",
        "created_at": now,
        "files": "[]",
        "total": 0,
        "done": 0,
        "failed": 0,
        "results": "[]",
        "callback_url": None,
        "folder": folder,
    }


def _audit_row(t: float, path: str, **values: object) -> dict:
    row = {"time": t, "method": "POST", "path": path, "status": 200, "outcome": "ok"}
    row.update(values)
    return row


def test_store_creates_tables_keys_and_audit_on_postgres(pg_url):
    from voicecheck.service.auth import AuthError, check_key, create_key
    from voicecheck.service.store import Store

    store = Store(pg_url)
    again = Store(pg_url)  # the tables exist already: opening the store again works
    try:
        with _connect_db(pg_url) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
            schema_rows = conn.execute("SELECT value FROM voicecheck_meta").fetchall()
        assert {"api_keys", "analyses", "audit_log", "jobs", "voicecheck_meta"} <= tables
        assert schema_rows == [("1",)]

        row, key = create_key(store, "partner", rate_limit="120/minute")
        checked = check_key(again, f"Bearer {key}")  # written by one, read by the other
        assert (checked.id, checked.name, checked.rate_limit) == (
            row["id"],
            "partner",
            "120/minute",
        )
        assert checked.scopes == frozenset({"analyze", "read"})
        with pytest.raises(AuthError):
            check_key(store, f"Bearer {key[:-1]}x")
        assert store.revoke_key(row["id"], time.time())
        assert not again.revoke_key(row["id"], time.time())  # already revoked
        with pytest.raises(AuthError, match="not valid"):
            check_key(again, f"Bearer {key}")

        t0 = time.time()
        big = 5 * 2**30  # a 5 GiB size needs a 64-bit column
        store.write_audit(
            [
                _audit_row(t0, "/v1/analyze", key_id=row["id"], size_bytes=big, score=0.25),
                _audit_row(t0 + 1, "/v1/analyze/batch", key_id=row["id"]),
                _audit_row(t0 + 2, "/v1/jobs", key_id=row["id"], status=202, outcome="queued"),
            ]
        )
        again.write_audit(
            [
                _audit_row(t0 + 3, "/v1/analyze", key_id=row["id"], status=429, outcome="rl"),
                _audit_row(t0 + 4, "/v1/jobs/j", key_id=row["id"], method="JOB"),
                _audit_row(t0 + 5, "/v1/analyze", key_id="someone-else"),
            ]
        )
        rows = list(again.audit_rows(key_id=row["id"]))
        assert [r["path"] for r in rows] == [
            "/v1/analyze",
            "/v1/analyze/batch",
            "/v1/jobs",
            "/v1/analyze",
            "/v1/jobs/j",
        ]
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
        assert rows[0]["size_bytes"] == big and rows[0]["score"] == 0.25
        assert rows[0]["time"] == pytest.approx(t0, abs=1e-6)
        assert len(list(store.audit_rows(since=t0 + 1, until=t0 + 3))) == 2
        assert len(list(store.audit_rows(limit=2))) == 2
        # 429 refusals and job files are not counted against the key's limit
        assert store.count_recent(row["id"], t0 - 1) == (3, pytest.approx(t0, abs=1e-6))
        assert store.count_recent(row["id"], t0 + 0.5)[0] == 2
        assert store.count_recent("nobody", t0 - 1) == (0, None)

        # The server drops every pooled connection (a restart, a failover): the next call
        # reconnects instead of failing.
        with _connect_db(pg_url) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert store.get_key(row["id"])["revoked_at"] is not None
        assert again.count_recent(row["id"], t0 - 1)[0] == 3
    finally:
        store.dispose()
        again.dispose()


def test_two_servers_share_jobs_claim_once_and_take_over_expired_leases(pg_url, tmp_path):
    from voicecheck.service.store import Store, new_id

    first, second = Store(pg_url), Store(pg_url)
    try:
        now = time.time()
        job_id = new_id("job")
        first.add_job(
            _job_row(job_id, now, str(tmp_path)),
            _audit_row(now, "/v1/jobs", status=202, outcome="queued", job_id=job_id),
        )
        barrier = threading.Barrier(2)
        claimed: dict[str, dict | None] = {}

        def claim(name: str, store: Store) -> None:
            barrier.wait(timeout=10)
            claimed[name] = store.claim_job(name, now, 60.0)

        threads = [
            threading.Thread(target=claim, args=("runner-a", first)),
            threading.Thread(target=claim, args=("runner-b", second)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        winners = [name for name, job in claimed.items() if job is not None]
        assert len(claimed) == 2 and len(winners) == 1, claimed
        winner = winners[0]
        loser = "runner-b" if winner == "runner-a" else "runner-a"
        stores = {"runner-a": first, "runner-b": second}
        held = first.get_job(job_id)
        assert held["status"] == "running" and held["runner"] == winner
        assert held["lease_until"] == pytest.approx(now + 60.0)
        assert held["started_at"] == pytest.approx(now)

        # While the lease holds, nobody else gets the job.
        assert stores[loser].claim_job(loser, now + 30, 60.0) is None
        # The holder stopped renewing: once the lease ran out, the other server takes over.
        later = held["lease_until"] + 1
        taken = stores[loser].claim_job(loser, later, 60.0)
        assert taken is not None and taken["id"] == job_id and taken["runner"] == loser
        assert taken["lease_until"] == pytest.approx(later + 60.0)
        assert taken["started_at"] == pytest.approx(now)  # the first start is kept
        # The old holder's writes are refused from now on.
        assert not stores[winner].update_job(job_id, held_by=winner, status="done")
        assert stores[loser].update_job(job_id, held_by=loser, status="done")
        assert first.get_job(job_id)["status"] == "done"

        # Many jobs, both servers claiming as fast as they can: each job runs exactly once.
        ids = [new_id("job") for _ in range(12)]
        for i, jid in enumerate(ids):
            first.add_job(
                _job_row(jid, now + i * 1e-3, str(tmp_path)),
                _audit_row(now, "/v1/jobs", status=202, outcome="queued", job_id=jid),
            )
        got: dict[str, list[str]] = {"a": [], "b": []}
        start = threading.Barrier(2)

        def drain(name: str, store: Store) -> None:
            start.wait(timeout=10)
            while (job := store.claim_job(name, later + 1, 60.0)) is not None:
                got[name].append(job["id"])

        threads = [
            threading.Thread(target=drain, args=("a", first)),
            threading.Thread(target=drain, args=("b", second)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(got["a"] + got["b"]) == sorted(ids)
    finally:
        first.dispose()
        second.dispose()


def test_service_analyzes_and_runs_jobs_on_postgres(pg_url, tmp_path, small_model, g711_call):
    from voicecheck.model import VERDICTS
    from voicecheck.service import create_app
    from voicecheck.service.auth import create_key

    app = create_app(
        {
            "data_dir": str(tmp_path / "data"),
            "database_url": pg_url,
            "detector": small_model,
            "job_runner": False,
            "log_level": "WARNING",
        }
    )
    app.config["TESTING"] = True
    svc = app.extensions["voicecheck"]
    try:
        row, key = create_key(svc.store, "partner")
        auth = {"Authorization": f"Bearer {key}"}
        client = app.test_client()

        wav = {**auth, "Content-Type": "audio/wav", "X-Filename": "call.wav"}
        answer = client.post("/v1/analyze", data=g711_call, headers=wav)
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        assert body["verdict"] in VERDICTS
        assert body["filename"] == "call.wav" and body["size_bytes"] == len(g711_call)

        stored = client.get(f"/v1/analyses/{body['id']}", headers=auth)
        assert stored.status_code == 200
        assert stored.get_json() == body

        refused = client.post("/v1/analyze", data=g711_call, headers={"Content-Type": "audio/wav"})
        assert refused.status_code == 401

        submitted = client.post("/v1/jobs", data=g711_call, headers=wav)
        assert submitted.status_code == 202, submitted.get_json()
        job_id = submitted.get_json()["id"]
        assert submitted.get_json()["status"] == "queued"
        assert svc.runner.run_pending() == 1
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
        assert job["status"] == "done", job
        assert job["progress"]["done"] == 1 and job["progress"]["failed"] == 0
        (result,) = job["results"]
        assert result["score"] == pytest.approx(body["score"])  # same bytes, same score

        with _connect_db(pg_url) as conn:
            audit_rows = conn.execute(
                "SELECT method, path, status, outcome, key_id, analysis_id, job_id"
                " FROM audit_log ORDER BY id"
            ).fetchall()
            n_analyses = conn.execute("SELECT count(*) FROM analyses").fetchone()[0]
        assert audit_rows == [
            ("POST", "/v1/analyze", 200, "ok", row["id"], body["id"], None),
            ("POST", "/v1/analyze", 401, "unauthorized", None, None, None),
            ("POST", "/v1/jobs", 202, "queued", row["id"], None, job_id),
            ("JOB", f"/v1/jobs/{job_id}", 200, "ok", row["id"], result["id"], job_id),
        ]
        assert n_analyses == 2
        assert [r["outcome"] for r in svc.store.audit_rows(key_id=row["id"])] == [
            "ok",
            "queued",
            "ok",
        ]
    finally:
        svc.store.dispose()


def test_cli_creates_keys_and_exports_audit_from_postgres(pg_url, tmp_path):
    from click.testing import CliRunner

    from voicecheck.cli import main
    from voicecheck.service.auth import check_key
    from voicecheck.service.store import Store

    runner = CliRunner()
    common = ["--database-url", pg_url, "--data-dir", str(tmp_path)]
    created = runner.invoke(main, ["keys", "create", "partner", *common])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("vck_")

    store = Store(pg_url)
    try:
        checked = check_key(store, f"Bearer {key}")
        assert checked.name == "partner"
        t0 = time.time()
        store.write_audit(
            [
                _audit_row(t0, "/v1/analyze", key_id=checked.id, verdict="likely_human", score=0.1),
                _audit_row(t0 + 1, "/v1/jobs", key_id=checked.id, status=202, outcome="queued"),
            ]
        )
    finally:
        store.dispose()

    listed = runner.invoke(main, ["keys", "list", *common])
    assert listed.exit_code == 0 and checked.id in listed.stdout

    exported = runner.invoke(main, ["audit", "export", "--format", "csv", *common])
    assert exported.exit_code == 0, exported.output
    lines = exported.stdout.splitlines()
    assert lines[0].startswith("time_iso,id,time,request_id,key_id,key_name,")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["path"], r["status"], r["key_id"]) for r in rows] == [
        ("/v1/analyze", "200", checked.id),
        ("/v1/jobs", "202", checked.id),
    ]
    assert rows[0]["verdict"] == "likely_human" and rows[0]["time_iso"].endswith("Z")


def test_unreachable_server_is_a_clear_error(tmp_path):
    from voicecheck.service.store import Store

    port = _free_port()  # nothing listens there
    url = f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{port}/x"
    with pytest.raises(StoreError) as info:
        Store(url)
    message = str(info.value)
    assert f"postgresql+psycopg://postgres:***@127.0.0.1:{port}/x" in message
    assert "s3cret-pw" not in message
    assert info.value.status == 503 and info.value.code == "store_unavailable"

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from voicecheck.cli import main; main()",
            "keys",
            "list",
            "--database-url",
            url,
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(
        "Error: cannot open the store at postgresql+psycopg://postgres:***@"
    )
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr


@pytest.fixture
def pg_app(pg_url, tmp_path, small_model):
    """The service on a fresh PostgreSQL database (job runner off: tests run jobs)."""
    from voicecheck.service import create_app

    app = create_app(
        {
            "data_dir": str(tmp_path / "data"),
            "database_url": pg_url,
            "detector": small_model,
            "job_runner": False,
            "log_level": "CRITICAL",
        }
    )
    app.config["TESTING"] = True
    yield app
    app.extensions["voicecheck"].store.dispose()


def _pg_auth(app) -> dict[str, str]:
    from voicecheck.service.auth import create_key

    return {"Authorization": f"Bearer {create_key(app.extensions['voicecheck'].store, 'p')[1]}"}


def test_long_multipart_file_name_is_analyzed_on_postgres(pg_app, g711_call):
    name = "n" * 600 + ".wav"
    answer = pg_app.test_client().post(
        "/v1/analyze",
        data={"file": (io.BytesIO(g711_call), name)},
        headers=_pg_auth(pg_app),
        content_type="multipart/form-data",
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["filename"].startswith("nnnn")


@pytest.mark.parametrize("how", ["x-filename", "multipart"])
def test_file_name_with_nul_is_analyzed_on_postgres(pg_app, g711_call, how):
    headers = _pg_auth(pg_app)
    if how == "x-filename":
        headers.update({"Content-Type": "audio/wav", "X-Filename": "call%00.wav"})
        data: object = g711_call
    else:
        data = {"file": (io.BytesIO(g711_call), "call\x00.wav")}
    answer = pg_app.test_client().post("/v1/analyze", data=data, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    assert "\x00" not in answer.get_json()["filename"]


def test_refused_callback_is_recorded_and_queued_jobs_still_run_on_postgres(pg_app, tmp_path):
    from voicecheck.service.store import new_id

    svc = pg_app.extensions["voicecheck"]
    now = time.time()
    # The callback host passed the check at submission and resolves to loopback now
    # (a DNS change): written straight to the store, as the API refuses it on submission.
    finished = {
        **_job_row(new_id("job"), now, str(tmp_path)),
        "status": "done",
        "finished_at": now,
        "callback_url": "http://[0000:0000:0000:0000:0000:0000:0000:0001]/hook",
    }
    queued = _job_row(new_id("job"), now + 1, str(tmp_path / "queued"))
    for row in (finished, queued):
        svc.store.add_job(row, _audit_row(now, "/v1/jobs", status=202, outcome="queued"))

    assert svc.runner.run_pending() == 1
    assert svc.store.get_job(finished["id"])["callback_status"].startswith("refused: ")
    assert svc.store.get_job(queued["id"])["status"] == "done"
