"""Jobs: queueing, running, progress, takeover after a crash, callbacks and their checks."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import make_service_app as make_app

from voicecheck.service.auth import create_key
from voicecheck.service.callbacks import CallbackURLError, check_callback_url, deliver
from voicecheck.service.settings import load_settings


@pytest.fixture
def receiver():
    """A callback receiver on loopback that records every POST."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": self.headers, "body": body})
            status = 500 if self.path == "/flaky" and len(received) == 1 else 204
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def submit(client, auth, files, **form):
    data = {"file": [(io.BytesIO(b), name) for name, b in files], **form}
    return client.post("/v1/jobs", data=data, headers=auth)


def test_job_is_queued_then_run_with_results_per_file(service_app, client, auth, g711_call):
    r = submit(client, auth, [("a.wav", g711_call), ("bad.bin", b"\x00" * 2000)])
    assert r.status_code == 202
    assert r.headers["Location"] == r.json["url"] == f"/v1/jobs/{r.json['id']}"
    assert r.json["status"] == "queued" and r.json["progress"]["total"] == 2
    assert r.json["progress"]["done"] == 0

    assert service_app.extensions["voicecheck"].runner.run_pending() == 1
    job = client.get(r.headers["Location"], headers=auth).json
    assert job["status"] == "done" and job["finished_at"]
    assert job["progress"] == {"total": 2, "done": 2, "failed": 1, "fraction": 1.0}
    good, bad = job["results"]
    assert good["filename"] == "a.wav" and good["sha256"] == hashlib.sha256(g711_call).hexdigest()
    assert good["job_id"] == job["id"] and 0 <= good["score"] <= 1
    assert client.get(good["url"], headers=auth).json["score"] == good["score"]
    assert bad["error"]["code"] in {"unsupported_format", "corrupt_audio"}
    # the uploaded copies are removed once the job is done
    data_dir = service_app.extensions["voicecheck"].settings.data_dir
    assert not (__import__("pathlib").Path(data_dir) / "jobs" / job["id"]).exists()


def test_job_audit_rows_name_the_key_and_the_job(service_app, client, auth, g711_call):
    r = submit(client, auth, [("a.wav", g711_call)])
    service_app.extensions["voicecheck"].runner.run_pending()
    rows = list(service_app.extensions["voicecheck"].store.audit_rows())
    assert [(x["method"], x["status"], x["outcome"]) for x in rows] == [
        ("POST", 202, "queued"),
        ("JOB", 200, "ok"),
    ]
    assert all(x["job_id"] == r.json["id"] and x["key_name"] == "test-partner" for x in rows)
    assert rows[1]["sha256"] == hashlib.sha256(g711_call).hexdigest()


def test_jobs_are_private_to_their_key(service_app, client, auth, g711_call):
    r = submit(client, auth, [("a.wav", g711_call)])
    other = create_key(service_app.extensions["voicecheck"].store, "other")[1]
    got = client.get(r.json["url"], headers={"Authorization": f"Bearer {other}"})
    assert got.status_code == 404 and got.json["code"] == "not_found"


def test_jobs_accept_recordings_too_long_for_a_synchronous_answer(tmp_path, small_model, g711_call):
    app = make_app(tmp_path, small_model, max_sync_duration_s=5)
    key = create_key(app.extensions["voicecheck"].store, "k")[1]
    auth = {"Authorization": f"Bearer {key}"}
    c = app.test_client()
    r = c.post("/v1/jobs", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    assert r.status_code == 202
    app.extensions["voicecheck"].runner.run_pending()
    job = c.get(r.json["url"], headers=auth).json
    assert job["status"] == "done" and "score" in job["results"][0]


def test_a_job_left_by_a_dead_process_is_taken_over_without_rescoring(
    tmp_path, small_model, g711_call
):
    app = make_app(tmp_path, small_model, job_lease_s=30)
    svc = app.extensions["voicecheck"]
    key = create_key(svc.store, "k")[1]
    auth = {"Authorization": f"Bearer {key}"}
    c = app.test_client()
    r = submit(c, auth, [("a.wav", g711_call), ("b.wav", g711_call)])
    job_id = r.json["id"]

    # A first process claims the job, scores file 0, then dies without a word.
    dead = svc.store.claim_job("dead-process", time.time(), 30)
    assert dead["id"] == job_id
    from voicecheck.service.jobs import JobRunner

    first = JobRunner(app, svc)
    first.name = "dead-process"
    item = json.loads(dead["files"])[0]
    from pathlib import Path

    result, analysis, audit_row = first._score(dead, Path(dead["folder"]), item)
    svc.store.job_file_done(
        job_id,
        "dead-process",
        index=0,
        result=result,
        analysis=analysis,
        audit_row=audit_row,
        lease_until=time.time() + 30,
    )

    # While its lease runs, nobody else takes it; once it has run out, another runner does.
    assert svc.store.claim_job("second", time.time(), 30) is None
    taken = svc.store.claim_job("second", time.time() + 31, 30)
    assert taken["id"] == job_id and taken["done"] == 1
    # The dead process cannot write any more: the job is no longer its own.
    assert not svc.store.job_file_done(
        job_id,
        "dead-process",
        index=1,
        result=result,
        analysis=None,
        audit_row=audit_row,
        lease_until=0,
    )
    second = JobRunner(app, svc)
    second.name = "second"
    second._run(taken)
    job = c.get(r.json["url"], headers=auth).json
    assert job["status"] == "done" and job["progress"]["done"] == 2
    job_rows = [x for x in svc.store.audit_rows() if x["method"] == "JOB"]
    assert [x["filename"] for x in job_rows] == ["a.wav", "b.wav"]  # file 0 scored once


def test_a_runner_that_stops_hands_its_job_back(tmp_path, small_model, g711_call):
    app = make_app(tmp_path, small_model)
    svc = app.extensions["voicecheck"]
    key = create_key(svc.store, "k")[1]
    r = submit(app.test_client(), {"Authorization": f"Bearer {key}"}, [("a.wav", g711_call)])
    runner = svc.runner
    svc.store.claim_job(runner.name, time.time(), 120)
    runner._current = r.json["id"]
    runner.stop()
    assert svc.store.get_job(r.json["id"])["status"] == "queued"


def test_background_runner_finishes_a_job_on_its_own(tmp_path, small_model, g711_call):
    app = make_app(tmp_path, small_model, job_runner=True, job_poll_s=0.1)
    svc = app.extensions["voicecheck"]
    try:
        key = create_key(svc.store, "k")[1]
        auth = {"Authorization": f"Bearer {key}"}
        c = app.test_client()
        r = submit(c, auth, [("a.wav", g711_call)])
        deadline = time.time() + 30
        while c.get(r.json["url"], headers=auth).json["status"] != "done":
            assert time.time() < deadline, "the job did not finish within 30 s"
            time.sleep(0.1)
        assert c.get("/readyz").json["checks"]["job_runner"] == "running"
    finally:
        svc.runner.stop()


# --- callbacks -----------------------------------------------------------------------


def test_callback_is_posted_when_the_job_is_done(tmp_path, small_model, g711_call, receiver):
    url, received = receiver
    app = make_app(tmp_path, small_model, callback_allow_private=True, callback_secret="k3y")
    svc = app.extensions["voicecheck"]
    key = create_key(svc.store, "k")[1]
    auth = {"Authorization": f"Bearer {key}"}
    c = app.test_client()
    r = submit(c, auth, [("a.wav", g711_call)], callback_url=f"{url}/hook")
    assert r.json["callback_url"] == f"{url}/hook"
    svc.runner.run_pending()
    assert len(received) == 1
    payload = json.loads(received[0]["body"])
    assert payload["event"] == "job.finished" and payload["id"] == r.json["id"]
    assert payload["status"] == "done" and payload["results"][0]["filename"] == "a.wav"
    assert payload["results"][0]["segments"] and payload["results"][0]["model"]["id"]
    expected = "sha256=" + hmac.new(b"k3y", received[0]["body"], hashlib.sha256).hexdigest()
    assert received[0]["headers"]["X-VoiceCheck-Signature"] == expected
    job = c.get(r.json["url"], headers=auth).json
    assert job["callback_status"] == "delivered: HTTP 204"
    svc.runner.run_pending()
    assert len(received) == 1  # delivered once, not again


def test_callback_is_retried_after_a_server_error(receiver):
    url, received = receiver
    settings = load_settings({"callback_allow_private": True, "callback_attempts": 3}, environ={})
    outcome = deliver(f"{url}/flaky", {"id": "job_1"}, settings, sleep=lambda s: None)
    assert outcome == "delivered: HTTP 204" and len(received) == 2


def test_callback_gives_up_and_says_why():
    settings = load_settings(
        {"callback_allow_private": True, "callback_attempts": 2, "callback_timeout_s": 1},
        environ={},
    )
    outcome = deliver("http://127.0.0.1:9/hook", {"id": "job_1"}, settings, sleep=lambda s: None)
    assert outcome.startswith("failed:")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("http:///nohost", "no host"),
        ("http://user:pw@example.com/", "user name or password"),
        ("http://127.0.0.1:8080/hook", "non-public"),
        ("http://localhost/hook", "non-public"),
        ("http://10.1.2.3/hook", "non-public"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
        ("http://[::1]/hook", "non-public"),
        ("http://[::ffff:192.168.0.1]/hook", "non-public"),
        ("http://0.0.0.0/hook", "non-public"),
        ("http://example.com:99999/", "invalid port"),
    ],
)
def test_unsafe_callback_urls_are_refused(url, message):
    with pytest.raises(CallbackURLError, match=message.replace("(", r"\(")):
        check_callback_url(url, load_settings(environ={}))


def test_private_callbacks_only_when_configured():
    allowed = load_settings({"callback_allowed_hosts": ["hooks.internal"]}, environ={})
    assert check_callback_url("http://hooks.internal/x", allowed) == "http://hooks.internal/x"
    with pytest.raises(CallbackURLError):
        check_callback_url("http://127.0.0.1/x", allowed)
    private = load_settings({"callback_allow_private": True}, environ={})
    assert check_callback_url("http://127.0.0.1/x", private)


def test_job_with_an_unsafe_callback_is_refused_before_anything_is_stored(
    service_app, client, auth, g711_call
):
    r = submit(client, auth, [("a.wav", g711_call)], callback_url="http://127.0.0.1/steal")
    assert r.status_code == 400 and r.json["code"] == "invalid_callback_url"
    svc = service_app.extensions["voicecheck"]
    assert svc.store.claim_job("x", time.time(), 10) is None
    assert list(svc.store.audit_rows())[-1]["outcome"] == "invalid_callback_url"


def test_retained_audio_is_deleted_after_its_retention_time(tmp_path, small_model, g711_call):
    app = make_app(tmp_path, small_model, retain_audio=True, retention_days=1)
    svc = app.extensions["voicecheck"]
    key = create_key(svc.store, "k")[1]
    r = app.test_client().post(
        "/v1/analyze",
        data=g711_call,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "audio/wav"},
    )
    path = svc.store.get_analysis(r.json["id"])["audio_path"]
    assert svc.runner.purge_audio() == 0  # not a day old yet
    assert svc.runner.purge_audio(now=time.time() + 2 * 86400) == 1
    assert not __import__("os").path.exists(path)
    assert svc.store.get_analysis(r.json["id"])["audio_path"] is None


def test_a_retried_submission_with_the_same_idempotency_key_makes_one_job(
    service_app, client, auth, g711_call
):
    headers = {**auth, "Idempotency-Key": "carrier-batch-2026-11-29-001"}
    first = submit(client, headers, [("a.wav", g711_call)])
    again = submit(client, headers, [("a.wav", g711_call)])
    assert first.status_code == 202 and again.status_code == 200
    assert again.json["id"] == first.json["id"] and again.headers["Location"] == first.json["url"]
    other = submit(client, {**auth, "Idempotency-Key": "another"}, [("a.wav", g711_call)])
    assert other.json["id"] != first.json["id"]
    assert service_app.extensions["voicecheck"].runner.run_pending() == 2


def test_cancel_a_queued_job_and_refuse_to_cancel_a_finished_one(
    service_app, client, auth, g711_call
):
    queued = submit(client, auth, [("a.wav", g711_call)]).json
    r = client.delete(queued["url"], headers=auth)
    assert r.status_code == 200 and r.json["status"] == "cancelled" and r.json["finished_at"]
    runner = service_app.extensions["voicecheck"].runner
    assert runner.run_pending() == 0  # nothing left to run
    done = submit(client, auth, [("b.wav", g711_call)]).json
    runner.run_pending()
    r = client.delete(done["url"], headers=auth)
    assert r.status_code == 409 and r.json["code"] == "conflict" and r.json["job_status"] == "done"


def test_a_callback_is_claimed_by_one_process_at_a_time(service_app, client, auth, g711_call):
    store = service_app.extensions["voicecheck"].store
    job = submit(client, auth, [("a.wav", g711_call)]).json
    store.update_job(job["id"], status="done", callback_url="https://example.org/hook")
    now = time.time()
    assert [j["id"] for j in store.pending_callbacks(now)] == [job["id"]]
    assert store.claim_callback(job["id"], now, 60)
    assert not store.claim_callback(job["id"], now + 1, 60)  # another process: not yours
    assert store.pending_callbacks(now + 1) == []
    # The claimer died without a word: after its hold, the callback is due again.
    assert [j["id"] for j in store.pending_callbacks(now + 61)] == [job["id"]]
    assert store.claim_callback(job["id"], now + 61, 60)


def test_jobs_take_files_over_the_synchronous_upload_limit_streamed_to_disk(
    tmp_path, small_model, g711_call
):
    app = make_app(tmp_path, small_model, max_upload_mb=0.05, max_job_upload_mb=0.5)
    svc = app.extensions["voicecheck"]
    auth = {"Authorization": f"Bearer {create_key(svc.store, 'k')[1]}"}
    c = app.test_client()
    sync = c.post("/v1/analyze", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    assert sync.status_code == 413
    r = c.post("/v1/jobs", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    assert r.status_code == 202
    svc.runner.run_pending()
    job = c.get(r.json["url"], headers=auth).json
    assert job["results"][0]["sha256"] == hashlib.sha256(g711_call).hexdigest()
    assert job["results"][0]["size_bytes"] == len(g711_call)


def test_a_job_file_over_its_limit_is_refused_and_nothing_is_left_behind(
    tmp_path, small_model, g711_call
):
    app = make_app(tmp_path, small_model, max_job_upload_mb=0.05)
    svc = app.extensions["voicecheck"]
    auth = {"Authorization": f"Bearer {create_key(svc.store, 'k')[1]}"}
    r = submit(app.test_client(), auth, [("ok.wav", g711_call[:20000]), ("big.wav", g711_call)])
    assert r.status_code == 413 and r.json["code"] == "file_too_large"
    assert "big.wav" in r.json["detail"]
    jobs_dir = __import__("pathlib").Path(svc.settings.data_dir) / "jobs"
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())
    assert svc.store.claim_job("x", time.time(), 10) is None
