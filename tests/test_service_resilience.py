"""The server under failure: a worker killed mid-request, uploads too large, uploads too slow.

One ``voicecheck serve`` (gunicorn, two sync workers, ``--timeout 10``) on loopback with a
SQLite store, shared by the tests. Workers are found as the master's children in
``/proc`` and killed with real signals; the audit log is read from the database file and
with ``voicecheck audit export``, as an operator would. The store's write-ahead rows are
also checked on their own, on SQLite and on a throwaway PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from test_service_postgres import pg_server, pg_url  # noqa: F401 - fixtures used here
from test_service_server import HOST, PROBLEM_JSON, Server, cli, create_key

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads workers from /proc"),
]

WORKER_TIMEOUT_S = 10  # gunicorn --timeout of the shared server (its least)
PARALLEL_UPLOADS = 50
KILL_WAIT_S = 20.0  # for a request of the victim worker to be in flight
SETTLE_S = 20.0  # for the master to close a dead worker's rows and replace it
LIMIT_BYTES = 64 * 1024 * 1024  # the default max_upload_mb
HUGE_BYTES = 3 * 1024**3  # what the client offers to send
SEND_PIECE_BYTES = 1 << 20
ANSWER_WAIT_S = 60.0


# --- processes ---------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers of a master)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def peak_rss_bytes(pid: int) -> int:
    """The most memory ``pid`` has held resident so far (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def workers_of(server: Server, n: int = 2) -> list[int]:
    """The server's ``n`` worker pids, once there are that many (bounded wait)."""
    assert server.proc is not None
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        pids = children(server.proc.pid)
        if len(pids) == n:
            return pids
        time.sleep(0.1)
    pytest.fail(f"the server has workers {children(server.proc.pid)}, not {n}")


def worker_label(pid: int) -> str:
    """How the audit log names a worker process."""
    return f"{socket.gethostname()}:{pid}"


# --- the audit log -----------------------------------------------------------------------


def db(server: Server) -> sqlite3.Connection:
    """A connection to the server's SQLite file (read by the test, written by the server)."""
    conn = sqlite3.connect(server.data_dir / "voicecheck.db", timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def audit_export(server: Server) -> list[dict[str, Any]]:
    """The whole audit log, from ``voicecheck audit export --format json``."""
    return json.loads(cli(server.data_dir, "audit", "export", "--format", "json"))


def audit_rows(server: Server, request_id: str) -> list[dict[str, Any]]:
    """The audit rows of one request, from the database file."""
    with db(server) as conn:
        rows = conn.execute("SELECT * FROM audit_log WHERE request_id = ?", (request_id,))
        return [dict(r) for r in rows.fetchall()]


# --- raw HTTP ----------------------------------------------------------------------------


def raw_request(
    port: int,
    head: str,
    body: Iterator[bytes],
    *,
    wait_s: float = ANSWER_WAIT_S,
) -> tuple[bytes, int, float]:
    """Send ``head`` then ``body`` until the server answers; (answer, bytes sent, seconds).

    Sending stops as soon as the server answers or closes (the answer may come long before
    the body is complete); the answer is read to the end.
    """
    started = time.monotonic()
    sent = 0
    with socket.create_connection((HOST, port), timeout=wait_s) as s:
        s.sendall(head.encode("latin-1"))
        for piece in body:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            try:
                s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            if time.monotonic() - started > wait_s:
                break
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent, time.monotonic() - started


def parse_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of an HTTP/1.1 answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), f"not an HTTP answer: {answer[:200]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def zeros(total: int, piece: int = SEND_PIECE_BYTES) -> Iterator[bytes]:
    """``total`` bytes in pieces, made as they are sent."""
    block = b"\0" * piece
    for _ in range(total // piece):
        yield block


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """``pieces`` framed as HTTP/1.1 chunks, with the last chunk at the end."""
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


# --- the shared server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("resilience") / "data",
        timeout_s=WORKER_TIMEOUT_S,
        rate_limit="0",
    )
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return create_key(server.data_dir, "carrier")


# --- a worker killed while requests are in flight ----------------------------------------


def _post(server: Server, key: str, audio: bytes, request_id: str) -> requests.Response | Exception:
    try:
        return server.http.post(
            server.url("/v1/analyze"),
            data=audio,
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "audio/wav",
                "X-Request-ID": request_id,
                "Idempotency-Key": request_id,
            },
            timeout=ANSWER_WAIT_S,
        )
    except requests.ConnectionError as exc:
        return exc


def _kill_when_busy(server: Server, victim: int, ours: set[str]) -> str | None:
    """SIGKILL ``victim`` in the middle of the burst, while it has one of ``ours`` received.

    Returns the id of that request (None if the victim never had one in flight).
    """
    label = worker_label(victim)
    deadline = time.monotonic() + KILL_WAIT_S
    with db(server) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT request_id, outcome FROM audit_log WHERE worker = ? AND time > ?",
                (label, time.time() - KILL_WAIT_S),
            ).fetchall()
            done = sum(1 for r in rows if r["request_id"] in ours and r["outcome"] == "ok")
            busy = [
                r["request_id"]
                for r in rows
                if r["request_id"] in ours and r["outcome"] == "received"
            ]
            if busy and done >= PARALLEL_UPLOADS // 5:
                os.kill(victim, signal.SIGKILL)
                return busy[0]
            time.sleep(0.001)
    return None


def test_a_killed_worker_loses_no_audit_record(server: Server, key: str, g711_call: bytes) -> None:
    victim = workers_of(server)[0]
    ids = [f"kill-{i:02d}-{uuid.uuid4().hex[:8]}" for i in range(PARALLEL_UPLOADS)]
    with ThreadPoolExecutor(PARALLEL_UPLOADS + 1) as pool:
        killer = pool.submit(_kill_when_busy, server, victim, set(ids))
        futures = {rid: pool.submit(_post, server, key, g711_call, rid) for rid in ids}
        killed_during = killer.result()
        answers = {rid: f.result() for rid, f in futures.items()}
    assert killed_during is not None, "no request of the victim worker was seen in flight"

    # The master closes the dead worker's rows and starts another worker.
    deadline = time.monotonic() + SETTLE_S
    with db(server) as conn:
        while time.monotonic() < deadline:
            left = conn.execute(
                "SELECT count(*) FROM audit_log WHERE outcome = 'received' AND worker = ?",
                (worker_label(victim),),
            ).fetchone()[0]
            if not left:
                break
            time.sleep(0.1)
    assert left == 0, server.log_tail()
    assert victim not in workers_of(server)

    rows = [r for r in audit_export(server) if r["request_id"] in answers]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(row["request_id"], []).append(row)
    assert sorted(by_id) == sorted(ids), "every request received has a row"
    assert all(len(v) == 1 for v in by_id.values()), "and only one"

    failed = [rid for rid, a in answers.items() if not isinstance(a, requests.Response)]
    assert len(failed) <= 1, "a sync worker answers one request at a time"
    for rid, answer in answers.items():
        (row,) = by_id[rid]
        if isinstance(answer, requests.Response):
            assert answer.status_code == 200, answer.text
            assert (row["status"], row["outcome"]) == (200, "ok")
            assert row["analysis_id"] == answer.json()["id"]
            stored = server.get(f"/v1/analyses/{row['analysis_id']}", key)
            assert stored.status_code == 200 and stored.json()["id"] == row["analysis_id"]
        else:  # the victim was answering it: stopped before (interrupted) or after scoring
            assert row["worker"] == worker_label(victim)
            assert (row["status"], row["outcome"]) in {(0, "interrupted"), (200, "ok")}
    # The request the kill hit failed at the client, unless it had been answered just before.
    assert killed_during in failed or by_id[killed_during][0]["outcome"] == "ok"

    # A retry with the same Idempotency-Key makes no second analysis.
    for rid in failed:
        again = _post(server, key, g711_call, rid)
        assert isinstance(again, requests.Response) and again.status_code == 200, again
        first = by_id[rid][0]
        if first["outcome"] == "ok":
            assert again.json()["id"] == first["analysis_id"]
    with db(server) as conn:
        counts = conn.execute(
            "SELECT idempotency_key, count(*) AS n FROM analyses WHERE idempotency_key LIKE "
            "'kill-%' GROUP BY idempotency_key"
        ).fetchall()
    assert all(r["n"] == 1 for r in counts)
    assert len(counts) == PARALLEL_UPLOADS
    assert server.get("/readyz").status_code == 200


# --- uploads too large -------------------------------------------------------------------


def _head(key: str, request_id: str, *, length: int | None, content_type: str) -> str:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST /v1/analyze HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nX-Request-ID: {request_id}\r\n{framing}\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("framing", "content_type", "code"),
    [
        ("length", "audio/wav", "file_too_large"),
        ("chunked", "audio/wav", "file_too_large"),
        ("length", "multipart/form-data; boundary=b0undary", "request_too_large"),
        ("chunked", "multipart/form-data; boundary=b0undary", "request_too_large"),
    ],
)
def test_a_huge_upload_is_refused_early(
    server: Server, key: str, framing: str, content_type: str, code: str
) -> None:
    workers = workers_of(server)
    peak_before = {pid: peak_rss_bytes(pid) for pid in workers}
    request_id = f"huge-{framing}-{uuid.uuid4().hex[:8]}"
    body = zeros(HUGE_BYTES)
    if content_type.startswith("multipart/"):
        part = (
            b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n"
        )
        body = (piece for first in ([part], zeros(HUGE_BYTES)) for piece in first)
    if framing == "chunked":
        body = chunked(body)
    head = _head(
        key,
        request_id,
        length=HUGE_BYTES if framing == "length" else None,
        content_type=content_type,
    )

    answer, sent, seconds = raw_request(server.port, head, body)

    status, headers, text = parse_answer(answer)
    assert status == 413, answer[:500]
    assert headers["content-type"].startswith(PROBLEM_JSON)
    problem = json.loads(text)
    assert problem["code"] == code and problem["request_id"] == request_id
    assert "MiB" in problem["detail"]
    assert sent < HUGE_BYTES // 8, f"the client sent {sent} bytes before the answer"
    if framing == "chunked":  # no length to refuse on: the limit is read, and no more
        assert sent >= LIMIT_BYTES
    assert seconds < 30
    grown = max(peak_rss_bytes(pid) - peak_before[pid] for pid in workers if pid in peak_before)
    assert grown < LIMIT_BYTES * 1.5, f"a worker grew by {grown / 2**20:.0f} MiB"

    (row,) = audit_rows(server, request_id)
    assert (row["status"], row["outcome"]) == (413, code)
    assert server.get("/readyz").status_code == 200


# --- uploads too slow --------------------------------------------------------------------


def test_a_trickling_upload_holds_its_worker_only_until_the_timeout(
    server: Server, key: str, g711_call: bytes
) -> None:
    request_id = f"slow-{uuid.uuid4().hex[:8]}"
    head = _head(key, request_id, length=len(g711_call), content_type="audio/wav")

    def trickle() -> Iterator[bytes]:
        for byte in g711_call:
            time.sleep(1.0)
            yield bytes([byte])

    result: dict[str, Any] = {}

    def send() -> None:
        result["answer"], result["sent"], result["seconds"] = raw_request(
            server.port, head, trickle()
        )

    client = threading.Thread(target=send)
    client.start()
    try:
        time.sleep(2.0)
        # Meanwhile the other worker answers.
        r = server.post(
            "/v1/analyze",
            key,
            data=g711_call,
            headers={"Content-Type": "audio/wav"},
        )
        assert r.status_code == 200, r.text
    finally:
        client.join(WORKER_TIMEOUT_S + 30)
    assert not client.is_alive(), "the trickling upload was never cut off"
    assert result["seconds"] < WORKER_TIMEOUT_S + 15
    assert result["sent"] < len(g711_call)

    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        rows = audit_rows(server, request_id)
        if rows and rows[0]["outcome"] != "received":
            break
        time.sleep(0.2)
    (row,) = rows
    assert (row["status"], row["outcome"]) == (0, "timed_out"), server.log_tail()
    workers_of(server)  # gunicorn started a new worker in its place
    assert server.get("/readyz").status_code == 200


# --- the store: write-ahead rows on SQLite and PostgreSQL --------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'voicecheck.db'}"
    return request.getfixturevalue("pg_url")


def _received(worker: str, request_id: str) -> dict[str, Any]:
    return {
        "time": time.time(),
        "request_id": request_id,
        "method": "POST",
        "path": "/v1/analyze",
        "status": 0,
        "outcome": "received",
        "worker": worker,
    }


def test_received_rows_are_completed_or_closed_per_worker(store_url: str) -> None:
    from voicecheck.service.store import Store

    store = Store(store_url)
    try:
        first = store.open_audit(_received("host-a:11", "r1"))
        store.open_audit(_received("host-a:11", "r2"))
        store.open_audit(_received("host-a:12", "r3"))
        answered = {"id": first, "status": 200, "outcome": "ok", "analysis_id": "an_1"}
        store.write_audit([{**answered, "time": 1.0, "method": "POST", "path": "/v1/analyze"}])
        assert sorted(store.in_flight_workers()) == ["host-a:11", "host-a:12"]

        assert store.end_in_flight("host-a:11", "interrupted") == 1
        assert store.in_flight_workers() == ["host-a:12"]
        rows = {r["request_id"]: r for r in store.audit_rows()}
        assert len(rows) == 3
        assert (rows["r1"]["status"], rows["r1"]["outcome"]) == (200, "ok")
        assert rows["r1"]["time"] > 1.0  # when it was received, not when it was answered
        assert rows["r1"]["worker"] == "host-a:11" and rows["r1"]["analysis_id"] == "an_1"
        assert (rows["r2"]["status"], rows["r2"]["outcome"]) == (0, "interrupted")
        assert rows["r3"]["outcome"] == "received"
    finally:
        store.dispose()


def test_start_closes_rows_of_workers_that_no_longer_run(store_url: str) -> None:
    import subprocess
    import sys

    from voicecheck.service.server import end_dead_workers
    from voicecheck.service.store import Store

    host = socket.gethostname()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
            gone.wait()
        store = Store(store_url)
        try:
            store.open_audit(_received(f"{host}:{gone.pid}", "dead"))
            store.open_audit(_received(f"{host}:{alive.pid}", "alive"))
            store.open_audit(_received(f"another-host:{gone.pid}", "elsewhere"))
            assert end_dead_workers(store) == 1
            outcomes = {r["request_id"]: r["outcome"] for r in store.audit_rows()}
            assert outcomes == {"dead": "interrupted", "alive": "received", "elsewhere": "received"}
        finally:
            store.dispose()
            alive.kill()


def test_an_older_store_opens_and_gains_the_new_columns(store_url: str) -> None:
    import sqlalchemy as sa

    from voicecheck.service.store import Store

    # A store as the version before the write-ahead audit made it.
    store = Store(store_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_audit_in_flight"))
        conn.execute(sa.text("DROP INDEX uq_analyses_key_idempotency"))
        conn.execute(sa.text("ALTER TABLE audit_log DROP COLUMN worker"))
        conn.execute(sa.text("ALTER TABLE analyses DROP COLUMN idempotency_key"))
        conn.execute(
            sa.text(
                "INSERT INTO audit_log (time, method, path, status, outcome) "
                "VALUES (1.5, 'POST', '/v1/analyze', 200, 'ok')"
            )
        )
    store.dispose()

    store = Store(store_url)
    try:
        (old,) = store.audit_rows()
        assert (old["outcome"], old["worker"]) == ("ok", None)
        row_id = store.open_audit(_received("host-b:7", "new"))
        assert store.in_flight_workers() == ["host-b:7"]
        store.write_audit([{"id": row_id, "status": 415, "outcome": "unsupported_format"}])
        assert [r["outcome"] for r in store.audit_rows()] == ["ok", "unsupported_format"]
        assert store.find_analysis("k", "idem") is None
        indexes = {i["name"] for i in sa.inspect(store.engine).get_indexes("audit_log")}
        assert "ix_audit_in_flight" in indexes
    finally:
        store.dispose()
