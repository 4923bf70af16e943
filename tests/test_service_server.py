"""The service end to end: ``voicecheck serve`` (gunicorn, two workers) over real HTTP.

Every server listens on 127.0.0.1 only, on a free port, with a data folder of its own;
keys are made and the audit log is read with the ``voicecheck`` command line, as an
operator would. One server is shared by most tests; the restart test runs its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest
import requests
import soxr
from media import require_format, write_audio

from voicecheck import __version__
from voicecheck.model import VERDICTS

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
VOICECHECK = [sys.executable, "-m", "voicecheck.cli"]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
JOB_TIMEOUT_S = 60.0
CALLBACK_WAIT_S = 15.0
HTTP_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 120.0
POLL_S = 0.2
PROBLEM_JSON = "application/problem+json"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _env(data_dir: Path, **settings: object) -> dict[str, str]:
    """The environment of a server or CLI run: this data folder, loopback callbacks allowed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VOICECHECK_")
        and k != "PROMETHEUS_MULTIPROC_DIR"
        and not k.lower().endswith("_proxy")
    }
    if "VOICECHECK_CACHE_DIR" in os.environ:
        env["VOICECHECK_CACHE_DIR"] = os.environ["VOICECHECK_CACHE_DIR"]
    # gunicorn's control socket goes to $XDG_RUNTIME_DIR; keep it away from other servers.
    runtime = data_dir.parent / f"{data_dir.name}-run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    values: dict[str, object] = {
        "data_dir": data_dir,
        "callback_allow_private": "true",
        "job_lease_s": 5,
        "job_poll_s": POLL_S,
        "log_format": "json",
        **settings,
    }
    env.update({f"VOICECHECK_{k.upper()}": str(v) for k, v in values.items()})
    return env


def cli(data_dir: Path, *args: str) -> str:
    """Run ``voicecheck ARGS`` on ``data_dir``; its standard output."""
    proc = subprocess.run(
        [*VOICECHECK, *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"voicecheck {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def create_key(data_dir: Path, name: str) -> str:
    """A new key made with ``voicecheck keys create`` (printed alone on the last line)."""
    key = cli(data_dir, "keys", "create", name).strip().splitlines()[-1]
    assert key.startswith("vck_"), key
    return key


class Server:
    """``voicecheck serve --workers 2`` on a free loopback port, in its own process group."""

    def __init__(self, data_dir: Path, *, port: int | None = None, **settings: object) -> None:
        self.data_dir = data_dir
        self.port = port or _free_port()
        self.settings = settings
        self.base = f"http://{HOST}:{self.port}"
        self.log = data_dir.parent / f"{data_dir.name}-server-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()
        self.http.trust_env = False  # straight to loopback, whatever proxy is configured

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*VOICECHECK, "serve", "--host", HOST, "--port", str(self.port), "--workers", "2"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=_env(self.data_dir, **self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"voicecheck serve exited with {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                r = self.http.get(self.url("/readyz"), timeout=2)
                if r.status_code == 200 and r.json().get("status") == "ready":
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        pytest.fail(f"voicecheck serve was not ready in {READY_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL to the process group after a timeout; the exit status."""
        self.http.close()
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT_S)
        return proc.returncode

    def get(self, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        return self.http.get(self.url(path), headers=_headers(key, kw), timeout=HTTP_TIMEOUT_S)

    def post(self, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        headers = _headers(key, kw)
        return self.http.post(self.url(path), headers=headers, timeout=HTTP_TIMEOUT_S, **kw)

    def wait_job(self, location: str, key: str) -> dict[str, Any]:
        """Poll a job until it is done or failed (bounded)."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = self.get(location, key)
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] in {"done", "failed"}:
                return body
            time.sleep(POLL_S)
        pytest.fail(
            f"job {location} still {body.get('status')} after {JOB_TIMEOUT_S:g} s:\n"
            + self.log_tail()
        )


def _headers(key: str | None, kw: dict[str, Any]) -> dict[str, str]:
    headers = dict(kw.pop("headers", None) or {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CallbackReceiver:
    """A job-callback endpoint on 127.0.0.1 that records every request it gets."""

    delay_s: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def __enter__(self) -> CallbackReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.calls.append(
                        {
                            "path": self.path,
                            "content_type": self.headers.get("Content-Type"),
                            "body": body,
                        }
                    )
                time.sleep(receiver.delay_s)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{HOST}:{self.server.server_address[1]}/hook"

    def wait(self, n: int, timeout_s: float = CALLBACK_WAIT_S) -> list[dict[str, Any]]:
        """The calls received, once there are ``n`` of them (or the time is up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.calls) >= n:
                    break
            time.sleep(0.05)
        with self.lock:
            return list(self.calls)


# --- recordings --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amr_call(tmp_path_factory: pytest.TempPathFactory, espeak_speech) -> bytes:
    """8 s of espeak-ng speech as an AMR-NB file (bytes)."""
    require_format("amr_nb")
    y, sr = espeak_speech
    y8 = soxr.resample(y, sr, 8000)
    y8 = np.tile(y8, int(np.ceil(8 * 8000 / y8.size)))[: 8 * 8000]
    path = tmp_path_factory.mktemp("amr") / "call.amr"
    return write_audio(path, y8, sr=8000, fmt="amr_nb").read_bytes()


BAD_FILE = b"this is a text file, not a recording\n" * 20


# --- the shared server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("shared") / "data")
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def partner(server: Server) -> str:
    """A key made with ``voicecheck keys create partner``."""
    return create_key(server.data_dir, "partner")


@pytest.fixture(scope="module")
def analyzed(
    server: Server, partner: str, g711_call: bytes, amr_call: bytes
) -> dict[str, tuple[bytes, requests.Response]]:
    """A G.711 WAV sent as the raw body and an AMR-NB file sent as a multipart part."""
    raw = server.post(
        "/v1/analyze",
        partner,
        data=g711_call,
        headers={"Content-Type": "audio/wav", "X-Filename": "call.wav"},
    )
    multipart = server.post(
        "/v1/analyze", partner, files={"file": ("call.amr", amr_call, "audio/amr")}
    )
    return {"pcm_mulaw": (g711_call, raw), "amr_nb": (amr_call, multipart)}


@pytest.fixture(scope="module")
def batch(
    server: Server, partner: str, g711_call: bytes, amr_call: bytes
) -> tuple[list[bytes], str, requests.Response]:
    """Two good files and a bad one in one batch; the files, the request id and the answer."""
    files = [g711_call, BAD_FILE, amr_call]
    names = ["a.wav", "notes.wav", "b.amr"]
    request_id = f"batch-{uuid.uuid4().hex[:12]}"
    r = server.post(
        "/v1/analyze/batch",
        partner,
        files=[
            ("file", (n, f, "application/octet-stream")) for n, f in zip(names, files, strict=True)
        ],
        headers={"X-Request-ID": request_id},
    )
    return files, request_id, r


@pytest.fixture(scope="module")
def refused(server: Server, g711_call: bytes) -> tuple[str, requests.Response]:
    """A recording sent without a key; the request id and the answer."""
    request_id = f"refused-{uuid.uuid4().hex[:12]}"
    r = server.post(
        "/v1/analyze",
        data=g711_call,
        headers={"Content-Type": "audio/wav", "X-Request-ID": request_id},
    )
    return request_id, r


@dataclass
class FinishedJob:
    files: list[bytes]
    submitted: requests.Response
    final: dict[str, Any]
    callbacks: list[dict[str, Any]]
    callback_status: str | None


@pytest.fixture(scope="module")
def finished_job(server: Server, partner: str, g711_call: bytes, amr_call: bytes) -> FinishedJob:
    """A job of two files with a callback to a receiver on 127.0.0.1, run to the end."""
    files = [g711_call, amr_call]
    with CallbackReceiver() as receiver:
        submitted = server.post(
            "/v1/jobs",
            partner,
            files=[("file", ("a.wav", g711_call, "audio/wav")), ("file", ("b.amr", amr_call))],
            data={"callback_url": receiver.url},
        )
        assert submitted.status_code == 202, submitted.text
        final = server.wait_job(submitted.headers["Location"], partner)
        callbacks = receiver.wait(1)
        deadline = time.monotonic() + CALLBACK_WAIT_S
        status = None
        while time.monotonic() < deadline:
            status = server.get(submitted.headers["Location"], partner).json()["callback_status"]
            if status and status != "delivering":  # claimed, then delivered or given up
                break
            time.sleep(POLL_S)
        callbacks = receiver.wait(len(callbacks), timeout_s=0.0)
    return FinishedJob(files, submitted, final, callbacks, status)


# --- keys --------------------------------------------------------------------------------


def test_no_key_is_refused_with_a_problem(refused: tuple[str, requests.Response]) -> None:
    request_id, r = refused
    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    body = r.json()
    assert body["status"] == 401
    assert body["code"] == "unauthorized"
    assert body["request_id"] == request_id
    assert "Traceback" not in r.text


def test_cli_key_works_until_revoked(server: Server) -> None:
    key = create_key(server.data_dir, "partner-old")
    missing = "/v1/analyses/an_0000000000000000000000000000dead"
    before = server.get(missing, key)
    assert before.status_code == 404  # the key was accepted; the analysis does not exist
    assert before.json()["code"] == "not_found"
    assert "revoked key" in cli(server.data_dir, "keys", "revoke", key)
    after = server.get(missing, key)
    assert after.status_code == 401
    assert after.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert after.json()["code"] == "unauthorized"


def test_mistyped_key_is_refused(server: Server, partner: str) -> None:
    r = server.get("/v1/analyses/an_x", partner[:-2] + "xx")
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


# --- analyses ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["pcm_mulaw", "amr_nb"])
def test_analyze_answers_and_stores_the_result(
    server: Server, partner: str, analyzed: dict[str, tuple[bytes, requests.Response]], codec: str
) -> None:
    sent, r = analyzed[codec]
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["id"].startswith("an_")
    assert 0.0 <= body["score"] <= 1.0
    assert body["verdict"] in VERDICTS
    assert body["sha256"] == sha256(sent)
    assert body["size_bytes"] == len(sent)
    assert body["audio"]["codec"] == codec
    assert body["model"]["id"] == server.get("/readyz").json()["checks"]["model"]

    stored = server.get(f"/v1/analyses/{body['id']}", partner)
    assert stored.status_code == 200, stored.text
    assert stored.json() == body


def test_batch_reports_each_file(batch: tuple[list[bytes], str, requests.Response]) -> None:
    files, _, r = batch
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3
    assert body["failed"] == 1
    good = [body["results"][0], body["results"][2]]
    assert [g["sha256"] for g in good] == [sha256(files[0]), sha256(files[2])]
    assert all(0.0 <= g["score"] <= 1.0 and g["verdict"] in VERDICTS for g in good)
    bad = body["results"][1]
    assert bad["index"] == 1
    assert bad["filename"] == "notes.wav"
    assert bad["error"]["code"] == "unsupported_format"
    assert 400 <= bad["error"]["status"] < 500
    assert bad["error"]["sha256"] == sha256(BAD_FILE)


# --- jobs --------------------------------------------------------------------------------


def test_job_runs_and_calls_back(finished_job: FinishedJob, partner: str) -> None:
    submitted = finished_job.submitted
    assert submitted.status_code == 202
    assert submitted.headers["Location"] == submitted.json()["url"]
    assert submitted.json()["status"] in {"queued", "running"}

    final = finished_job.final
    assert final["status"] == "done"
    assert final["progress"] == {"total": 2, "done": 2, "failed": 0, "fraction": 1.0}
    assert [r["sha256"] for r in final["results"]] == [sha256(f) for f in finished_job.files]
    assert all(r["verdict"] in VERDICTS for r in final["results"])
    assert [r["audio"]["codec"] for r in final["results"]] == ["pcm_mulaw", "amr_nb"]

    assert finished_job.callback_status == "delivered: HTTP 204"
    assert len(finished_job.callbacks) == 1
    call = finished_job.callbacks[0]
    assert call["path"] == "/hook"
    assert call["content_type"] == "application/json"
    payload = json.loads(call["body"])
    assert payload["event"] == "job.finished"
    assert payload["id"] == final["id"]
    assert payload["status"] == "done"
    assert len(payload["results"]) == 2


def test_slow_callback_receiver_gets_one_call(
    server: Server, partner: str, g711_call: bytes
) -> None:
    with CallbackReceiver(delay_s=2.0) as receiver:
        r = server.post(
            "/v1/jobs",
            partner,
            files={"file": ("a.wav", g711_call, "audio/wav")},
            data={"callback_url": receiver.url},
        )
        assert r.status_code == 202, r.text
        assert server.wait_job(r.headers["Location"], partner)["status"] == "done"
        calls = receiver.wait(2, timeout_s=6.0)
    assert len(calls) == 1


# --- restart -----------------------------------------------------------------------------


def test_results_and_queued_jobs_survive_a_restart(tmp_path: Path, g711_call: bytes) -> None:
    data_dir = tmp_path / "data"
    first = Server(data_dir, job_runner="false")
    try:
        first.start()
        key = create_key(data_dir, "partner")
        analysis = first.post(
            "/v1/analyze", key, data=g711_call, headers={"Content-Type": "audio/wav"}
        )
        assert analysis.status_code == 200, analysis.text
        job = first.post(
            "/v1/jobs", key, files=[("file", ("a.wav", g711_call)), ("file", ("b.wav", g711_call))]
        )
        assert job.status_code == 202, job.text
        location = job.headers["Location"]
        time.sleep(5 * POLL_S)
        assert first.get(location, key).json()["status"] == "queued"
    finally:
        code = first.stop()
    assert code == 0, first.log_tail()

    second = Server(data_dir, port=first.port)
    try:
        second.start()
        again = second.get(f"/v1/analyses/{analysis.json()['id']}", key)
        assert again.status_code == 200, again.text
        assert again.json() == analysis.json()
        final = second.wait_job(location, key)
    finally:
        second.stop()
    assert final["status"] == "done", final
    assert final["progress"]["done"] == 2
    assert final["progress"]["failed"] == 0
    assert [r["sha256"] for r in final["results"]] == [sha256(g711_call)] * 2


def test_job_running_at_a_clean_stop_resumes_at_once(tmp_path: Path, g711_call: bytes) -> None:
    data_dir = tmp_path / "data"
    lease_s = 120
    first = Server(data_dir, job_lease_s=lease_s)
    try:
        first.start()
        key = create_key(data_dir, "partner")
        job = first.post(
            "/v1/jobs", key, files=[("file", (f"{i}.wav", g711_call)) for i in range(4)]
        )
        assert job.status_code == 202, job.text
        location = job.headers["Location"]
        deadline = time.monotonic() + JOB_TIMEOUT_S
        progress: dict[str, Any] = {"done": 0, "total": 4}
        while time.monotonic() < deadline:
            progress = first.get(location, key).json()["progress"]
            if progress["done"] >= 1:
                break
            time.sleep(0.05)
    finally:
        first.stop()
    if progress["done"] == progress["total"]:
        pytest.skip("the job finished before the server was stopped")

    second = Server(data_dir, port=first.port, job_lease_s=lease_s)
    try:
        second.start()
        deadline = time.monotonic() + 10.0  # a handed-back job is claimed within job_poll_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = second.get(location, key).json()
            if body["status"] == "done":
                break
            time.sleep(POLL_S)
    finally:
        second.stop()
    assert body["status"] == "done", body["progress"]
    assert body["progress"]["done"] == 4


# --- audit log ---------------------------------------------------------------------------


def test_audit_log_records_every_file_and_refusal(
    server: Server,
    analyzed: dict[str, tuple[bytes, requests.Response]],
    batch: tuple[list[bytes], str, requests.Response],
    refused: tuple[str, requests.Response],
    finished_job: FinishedJob,
) -> None:
    rows = json.loads(cli(server.data_dir, "audit", "export", "--format", "json"))
    by_analysis = {r["analysis_id"]: r for r in rows if r["analysis_id"]}

    for sent, r in analyzed.values():
        row = by_analysis[r.json()["id"]]
        assert (row["method"], row["path"], row["status"]) == ("POST", "/v1/analyze", 200)
        assert row["outcome"] == "ok"
        assert row["sha256"] == sha256(sent)
        assert row["key_name"] == "partner"
        assert row["verdict"] == r.json()["verdict"]

    files, batch_id, _ = batch
    batch_rows = [r for r in rows if r["request_id"] == batch_id]
    assert [r["sha256"] for r in batch_rows] == [sha256(f) for f in files]
    assert [r["outcome"] for r in batch_rows] == ["ok", "unsupported_format", "ok"]

    refused_id, _ = refused
    (refusal,) = [r for r in rows if r["request_id"] == refused_id]
    assert (refusal["status"], refusal["outcome"]) == (401, "unauthorized")
    assert refusal["key_id"] is None

    job_id = finished_job.final["id"]
    job_rows = [r for r in rows if r["job_id"] == job_id]
    (submission,) = [r for r in job_rows if r["method"] == "POST"]
    assert (submission["status"], submission["outcome"]) == (202, "queued")
    scored = [r for r in job_rows if r["method"] == "JOB"]
    assert sorted(r["sha256"] for r in scored) == sorted(sha256(f) for f in finished_job.files)
    assert {r["outcome"] for r in scored} == {"ok"}
    assert {r["key_name"] for r in scored} == {"partner"}
    assert {r["analysis_id"] for r in scored} == {r["id"] for r in finished_job.final["results"]}


# --- operations --------------------------------------------------------------------------


def test_healthz(server: Server) -> None:
    r = server.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": __version__}


def _counter(text: str, name: str, **labels: str) -> float:
    """The value of one labelled sample in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}\{{([^}}]*)\}} (\S+)", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    return 0.0


def test_metrics_add_up_the_workers(
    server: Server, analyzed: dict[str, tuple[bytes, requests.Response]]
) -> None:
    r = server.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE voicecheck_http_requests_total counter" in r.text
    name = "voicecheck_http_requests_total"
    ok = _counter(r.text, name, endpoint="/v1/analyze", method="POST", status="200")
    assert ok == len(analyzed)
    health = {"endpoint": "/healthz", "method": "GET", "status": "200"}
    before = _counter(r.text, name, **health)
    n = 6  # gunicorn's sync workers close every connection: the kernel spreads them
    for _ in range(n):
        assert server.get("/healthz").status_code == 200
    after = _counter(server.get("/metrics").text, name, **health)
    assert after - before == n


def test_request_id_is_echoed(server: Server) -> None:
    assert (
        server.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    refused = server.post("/v1/analyze", headers={"X-Request-ID": "abc-123"})
    assert refused.headers["X-Request-ID"] == "abc-123"
    assert refused.json()["request_id"] == "abc-123"
    fresh = server.get("/healthz", headers={"X-Request-ID": "not a token!"})
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-ID"])
