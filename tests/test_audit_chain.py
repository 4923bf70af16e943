"""The audit log's hash chain: `voicecheck audit verify`, `audit export --format jsonl`, the PDF.

Each test runs on a real SQLite file and on a real PostgreSQL server (the throwaway
cluster of ``test_service_postgres.py``; those runs are skipped when the PostgreSQL
binaries are absent). Tampering is done the way someone with access to the database
would do it: plain SQL on the tables, behind the service's back.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from pypdf import PdfReader

from voicecheck.cli import main
from voicecheck.service.audit import verify
from voicecheck.service.evidence import evidence_pdf
from voicecheck.service.store import Store, chain_hash

try:  # the PostgreSQL cluster fixture, shared with the other PostgreSQL tests
    from test_service_postgres import pg_server  # noqa: F401
except (ImportError, pytest.skip.Exception):  # psycopg missing: only SQLite runs
    pg_server = None

FLOAT_COLUMNS = ("time", "duration_s", "processing_ms", "score")
ZEROS = "0" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    """A fresh, empty store's URL: a SQLite file, or a database on the PostgreSQL cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'voicecheck.db'}"
    if pg_server is None:
        pytest.skip("psycopg is missing: pip install -e '.[dev]'")
    request.applymarker(pytest.mark.slow)
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture
def store(url):
    s = Store(url)
    yield s
    s.dispose()


def sql(url: str, statement: str, **params) -> list:
    """Run one SQL statement on the store's database directly; the rows it returns."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def row(t: float, path: str = "/v1/analyze", **values) -> dict:
    out = {"time": t, "method": "POST", "path": path, "status": 200, "outcome": "ok"}
    out.update(values)
    return out


def fill(store: Store, n: int = 6, *, analysis_id: str = "an_case1") -> None:
    """``n`` rows the way the service writes them: some whole, some write-ahead then completed."""
    t = 1_764_000_000.123456
    for i in range(n):
        if i % 2:
            rid = store.open_audit(
                row(t + i, status=0, outcome="received", worker="host:1", size_bytes=1000 + i)
            )
            store.write_audit(
                [
                    row(
                        t + i,
                        id=rid,
                        verdict="likely_human",
                        score=0.1 + i / 100,
                        duration_s=12.5,
                        processing_ms=83.25,
                        analysis_id=analysis_id,
                        filename=f"appel_électoral_{i}.wav",
                    )
                ]
            )
        else:
            store.write_audit([row(t + i, "/console/cases", method="GET", user_name="Zoë")])


def by_seq(store: Store) -> dict[int, dict]:
    return {r["seq"]: r for r in store.audit_rows() if r["seq"] is not None}


def verify_cli(url: str) -> tuple[int, str]:
    return cli("audit", "verify", "--database-url", url)


# --------------------------------------------------------------------------------------------
# an intact log


def test_intact_log_verifies(store, url):
    fill(store)
    code, out = verify_cli(url)
    assert code == 0, out
    assert out.strip() == "audit log intact: 6 chained row(s), sequence 1-6"
    assert sorted(by_seq(store)) == [1, 2, 3, 4, 5, 6]


def test_empty_log_verifies(store, url):
    code, out = verify_cli(url)
    assert code == 0 and "no chained rows yet" in out


def test_completing_a_received_row_chains_its_final_content(store, url):
    t = time.time()
    rid = store.open_audit(row(t, status=0, outcome="received", worker="host:7"))
    store.write_audit([row(t + 1, "/v1/keys", method="GET")])
    pending = next(r for r in store.audit_rows() if r["id"] == rid)
    assert pending["seq"] is None  # in flight: not chained yet
    code, out = verify_cli(url)
    assert code == 0 and "1 row(s) still in flight" in out

    store.write_audit([row(t, id=rid, score=0.91, verdict="likely_cloned")])
    done = next(r for r in store.audit_rows() if r["id"] == rid)
    assert done["seq"] == 2 and done["score"] == 0.91 and done["outcome"] == "ok"
    assert done["hash"] == chain_hash(done, 2, done["prev_hash"])

    # An answer for a row already chained does not change it: it is a row of its own.
    store.write_audit([row(t, id=rid, status=500, outcome="late")])
    rows = by_seq(store)
    assert rows[2]["outcome"] == "ok" and rows[3]["outcome"] == "late"
    assert verify_cli(url)[0] == 0


def test_requests_of_a_dead_worker_are_chained_when_ended(store, url):
    t = time.time()
    store.open_audit(row(t, status=0, outcome="received", worker="host:9"))
    store.open_audit(row(t + 1, status=0, outcome="received", worker="host:9"))
    assert store.end_in_flight("host:9", "interrupted") == 2
    rows = by_seq(store)
    assert [rows[s]["outcome"] for s in (1, 2)] == ["interrupted", "interrupted"]
    code, out = verify_cli(url)
    assert code == 0 and "2 chained row(s)" in out


# --------------------------------------------------------------------------------------------
# tampering


def test_editing_a_field_names_the_row(store, url):
    fill(store)
    victim = by_seq(store)[4]
    sql(url, "UPDATE audit_log SET score = 0.99 WHERE id = :id", id=victim["id"])
    code, out = verify_cli(url)
    assert code == 1
    assert f"content changed: row id {victim['id']} (sequence 4)" in out
    report = verify(store)
    assert (report.kind, report.bad_id, report.bad_seq) == ("content_changed", victim["id"], 4)


def test_editing_a_row_and_its_hash_names_the_row(store, url):
    fill(store)
    victim = dict(by_seq(store)[3])
    victim["user_name"] = "someone else"
    forged = chain_hash(victim, 3, victim["prev_hash"])
    sql(
        url,
        "UPDATE audit_log SET user_name = 'someone else', hash = :h WHERE id = :id",
        h=forged,
        id=victim["id"],
    )
    code, out = verify_cli(url)
    assert code == 1 and f"row id {victim['id']} (sequence 3)" in out
    report = verify(store)
    assert (report.kind, report.bad_seq) == ("content_changed", 3)


def test_deleting_a_row_names_the_gap(store, url):
    fill(store)
    victim = by_seq(store)[3]
    sql(url, "DELETE FROM audit_log WHERE id = :id", id=victim["id"])
    code, out = verify_cli(url)
    assert code == 1 and "sequence 3 is missing" in out
    report = verify(store)
    assert (report.kind, report.bad_seq) == ("row_missing", 3)


def test_deleting_the_last_row_is_found_from_the_head(store, url):
    fill(store)
    sql(url, "DELETE FROM audit_log WHERE seq = 6")
    code, out = verify_cli(url)
    assert code == 1 and "sequence 6 is missing" in out


def test_swapping_two_rows_names_the_first_moved(store, url):
    fill(store)
    rows = by_seq(store)
    a, b = rows[2], rows[3]
    sql(url, "UPDATE audit_log SET seq = -1 WHERE id = :id", id=a["id"])
    sql(url, "UPDATE audit_log SET seq = 2 WHERE id = :id", id=b["id"])
    sql(url, "UPDATE audit_log SET seq = 3 WHERE id = :id", id=a["id"])
    code, out = verify_cli(url)
    assert code == 1
    assert f"order changed: row id {b['id']} (sequence 2)" in out
    report = verify(store)
    assert (report.kind, report.bad_id, report.bad_seq) == ("order_changed", b["id"], 2)


def test_a_row_added_behind_the_services_back_is_found(store, url):
    fill(store)
    sql(
        url,
        "INSERT INTO audit_log (time, method, path, status, outcome) "
        "VALUES (1764000100.0, 'POST', '/v1/analyze', 200, 'ok')",
    )
    code, out = verify_cli(url)
    assert code == 1 and "not in the chain" in out


# --------------------------------------------------------------------------------------------
# a store made before the chain existed


def test_rows_from_before_the_chain_are_unchained_not_tampered(url):
    store = Store(url)
    fill(store, 2)
    store.dispose()
    # Make it look like a store of the earlier version: no chain columns, no chain head.
    sql(url, "DROP INDEX uq_audit_seq")
    for column in ("seq", "prev_hash", "hash"):
        sql(url, f"ALTER TABLE audit_log DROP COLUMN {column}")
    sql(url, "DROP TABLE audit_chain")
    sql(
        url,
        "INSERT INTO audit_log (time, method, path, status, outcome) "
        "VALUES (1764000050.0, 'GET', '/v1/keys', 200, 'ok')",
    )

    store = Store(url)  # upgrades the store on open
    try:
        code, out = verify_cli(url)
        assert code == 0, out
        assert "3 older row(s) written before the chain began are unchained" in out
        fill(store, 2)
        code, out = verify_cli(url)
        assert code == 0 and "2 chained row(s), sequence 1-2" in out and "3 older" in out
    finally:
        store.dispose()


# --------------------------------------------------------------------------------------------
# several writers at once


def _writer(url: str, name: str, n: int) -> None:
    store = Store(url)
    try:
        for i in range(n):
            t = time.time()
            if i % 2:
                rid = store.open_audit(row(t, status=0, outcome="received", worker=name))
                store.write_audit([row(t, id=rid, score=i / n, worker=name)])
            else:
                store.write_audit([row(t, "/v1/jobs", status=202, outcome="queued", worker=name)])
    finally:
        store.dispose()


def test_concurrent_writers_keep_one_chain(store, url):
    store.dispose()  # no pooled connection crosses the fork
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(url, f"host:{k}", 20)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    code, out = verify_cli(url)
    assert code == 0, out
    assert "80 chained row(s), sequence 1-80" in out
    rows = list(store.audit_rows())
    assert len(rows) == 80 and all(r["seq"] is not None for r in rows)


# --------------------------------------------------------------------------------------------
# the export, checked by a recomputation that does not use voicecheck's code


def recompute(lines: list[str], *, first_prev: str | None = ZEROS) -> list[dict]:
    """Check each exported line's hash and link from the documented rule alone."""
    entries = [json.loads(line) for line in lines]
    prev = first_prev
    for entry in entries:
        doc = {k: v for k, v in entry["row"].items() if v is not None}
        for k in FLOAT_COLUMNS:
            if k in doc:
                doc[k] = format(doc[k], ".6f")
        doc["seq"] = entry["seq"]
        doc["prev_hash"] = entry["prev_hash"]
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == entry["hash"], entry
        if prev is not None:
            assert entry["prev_hash"] == prev, entry
        prev = entry["hash"]
    return entries


def test_export_recomputes_independently(store, url, tmp_path):
    fill(store, 8)
    target = tmp_path / "audit.jsonl"
    code, out = cli(
        "audit", "export", "--format", "jsonl", "-o", str(target), "--database-url", url
    )
    assert code == 0, out
    lines = target.read_text(encoding="utf-8").splitlines()
    entries = recompute(lines)
    assert [e["seq"] for e in entries] == list(range(1, 9))
    assert any("appel_électoral_1.wav" == e["row"]["filename"] for e in entries)
    assert entries[-1]["hash"] == store.audit_chain_head()["hash"]

    # --since starts at the first row of that time and links on from the row before it.
    code, out = cli(
        "audit", "export", "--format", "jsonl", "--since", "2025-11-24T16:00:04Z",
        "--database-url", url,
    )  # fmt: skip
    assert code == 0, out
    part = recompute(out.splitlines(), first_prev=entries[3]["hash"])
    assert [e["seq"] for e in part] == [5, 6, 7, 8]


def test_export_of_an_edited_log_no_longer_recomputes(store, url):
    fill(store, 4)
    sql(url, "UPDATE audit_log SET outcome = 'forged' WHERE seq = 2")
    code, out = cli("audit", "export", "--format", "jsonl", "--database-url", url)
    assert code == 0
    with pytest.raises(AssertionError):
        recompute(out.splitlines())


# --------------------------------------------------------------------------------------------
# the evidence report


def test_evidence_report_prints_the_cases_rows_with_their_hashes(store, url):
    fill(store, 6, analysis_id="an_case1")
    store.write_audit([row(time.time(), analysis_id="an_other")])
    rows = store.case_audit_rows("an_case1")
    assert [r["seq"] for r in rows] == [2, 4, 6]
    pdf = evidence_pdf({"id": "an_case1", "filename": "call.wav", "audit": rows})
    text = "".join(
        "".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf)).pages
    )
    assert "Theauditlog" in text
    code, out = cli("audit", "export", "--format", "jsonl", "--database-url", url)
    exported = {e["seq"]: e for e in recompute(out.splitlines())}
    for r in rows:
        assert f"Sequence{r['seq']}·recordid{r['id']}" in text
        assert r["hash"] in text and r["prev_hash"] in text
        assert exported[r["seq"]]["hash"] == r["hash"]


def test_evidence_report_without_audit_rows_leaves_the_section_out():
    text = "".join(
        page.extract_text() for page in PdfReader(io.BytesIO(evidence_pdf({"id": "an_1"}))).pages
    )
    assert "The audit log" not in text
    empty = evidence_pdf({"id": "an_1", "audit": []})
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(empty)).pages)
    assert "No audit log records" in text


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_input_gets_a_clear_message(tmp_path):
    data = str(tmp_path / "data")
    code, out = cli(
        "audit", "export", "--format", "jsonl", "--since", "yesterday", "--data-dir", data
    )
    assert code == 2 and "'yesterday' is not an ISO 8601 date or time" in out
    code, out = cli("audit", "export", "--format", "jsonl", "--key", "k1", "--data-dir", data)
    assert code == 1 and "jsonl takes --since only" in out
    code, out = cli("audit", "verify", "--database-url", "nosuchdb://x")
    assert code == 1 and out.startswith("Error: ")
    code, out = cli("audit", "export", "--format", "jsonl", "-o", str(tmp_path), "--data-dir", data)
    assert code != 0 and "Error" in out
