"""`voicecheck keys`, `voicecheck audit export` and `voicecheck serve` errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from voicecheck.cli import main
from voicecheck.service import create_app


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "data")


def run(*args, env=None):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result


def test_keys_create_prints_the_key_alone_on_the_last_line(data_dir):
    result = run("keys", "create", "carrier-a", "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("vck_") and " " not in key
    listing = run("keys", "list", "--data-dir", data_dir).output
    assert "carrier-a" in listing and "analyze,read" in listing
    assert key.split("_", 2)[2] not in listing  # the secret is never shown again


def test_keys_take_scopes_and_rate_limits_and_can_be_revoked(data_dir):
    made = run(
        "keys",
        "create",
        "ops",
        "--scope",
        "admin",
        "--rate-limit",
        "5/second",
        "--data-dir",
        data_dir,
    )
    key = made.output.strip().splitlines()[-1]
    key_id = key.split("_")[1]
    assert "scopes: admin" in made.output and "5/second" in made.output
    revoked = run("keys", "revoke", key_id, "--data-dir", data_dir)
    assert revoked.exit_code == 0 and f"revoked key {key_id}" in revoked.output
    again = run("keys", "revoke", key_id, "--data-dir", data_dir)
    assert again.exit_code == 1 and "no active key" in again.output
    assert "ops" not in run("keys", "list", "--data-dir", data_dir).output
    assert "ops" in run("keys", "list", "--all", "--data-dir", data_dir).output


def test_revoke_by_name_or_by_the_key_itself(data_dir):
    key = run("keys", "create", "lost-laptop", "--data-dir", data_dir).output.split()[-1]
    assert run("keys", "revoke", key, "--data-dir", data_dir).exit_code == 0
    run("keys", "create", "twin", "--data-dir", data_dir)
    run("keys", "create", "twin", "--data-dir", data_dir)
    both = run("keys", "revoke", "twin", "--data-dir", data_dir)
    assert both.exit_code == 1 and "2 active keys are named 'twin'" in both.output


def test_bad_key_requests_are_one_line_errors(data_dir):
    result = run("keys", "create", "x", "--rate-limit", "fast", "--data-dir", data_dir)
    assert result.exit_code == 1
    assert result.output.startswith("Error: rate limit 'fast' is not understood")
    assert "Traceback" not in result.output


def test_data_dir_comes_from_the_environment(data_dir):
    env = {"VOICECHECK_DATA_DIR": data_dir}
    run("keys", "create", "from-env", env=env)
    assert "from-env" in run("keys", "list", "--data-dir", data_dir).output


def _with_traffic(data_dir, small_model, g711_call):
    key = run("keys", "create", "partner", "--data-dir", data_dir).output.split()[-1]
    app = create_app(
        {"data_dir": data_dir, "detector": small_model, "job_runner": False, "log_level": "WARNING"}
    )
    c = app.test_client()
    ok = c.post(
        "/v1/analyze",
        data=g711_call,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "audio/wav"},
    )
    c.post("/v1/analyze", data=g711_call, headers={"Content-Type": "audio/wav"})
    app.extensions["voicecheck"].store.dispose()
    return ok.json


def test_audit_export_as_csv_and_json(data_dir, small_model, g711_call, tmp_path):
    analysis = _with_traffic(data_dir, small_model, g711_call)
    out = run("audit", "export", "--data-dir", data_dir)
    assert out.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert [(r["status"], r["outcome"]) for r in rows] == [("200", "ok"), ("401", "unauthorized")]
    assert rows[0]["sha256"] == analysis["sha256"] and rows[0]["key_name"] == "partner"
    assert rows[0]["analysis_id"] == analysis["id"] and rows[0]["time_iso"].endswith("Z")

    target = tmp_path / "audit.json"
    result = run("audit", "export", "--format", "json", "-o", str(target), "--data-dir", data_dir)
    assert result.exit_code == 0 and "wrote 2 audit row(s)" in result.output
    rows = json.loads(target.read_text())
    assert rows[0]["verdict"] == analysis["verdict"] and rows[1]["key_id"] is None


def test_audit_export_filters_by_time_and_key(data_dir, small_model, g711_call):
    _with_traffic(data_dir, small_model, g711_call)
    later = json.loads(
        run(
            "audit", "export", "--format", "json", "--since", "2999-01-01", "--data-dir", data_dir
        ).output
    )
    assert later == []
    earlier = json.loads(
        run(
            "audit",
            "export",
            "--format",
            "json",
            "--until",
            "2000-01-01T00:00",
            "--data-dir",
            data_dir,
        ).output
    )
    assert earlier == []
    bad = run("audit", "export", "--since", "yesterday", "--data-dir", data_dir)
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_serve_stops_at_once_on_a_bad_setting(data_dir):
    result = run("serve", "--data-dir", data_dir, env={"VOICECHECK_MAX_UPLOAD_MB": "lots"})
    assert result.exit_code == 1
    assert "Error: setting max_upload_mb from VOICECHECK_MAX_UPLOAD_MB is 'lots'" in result.output


def test_serve_stops_at_once_on_a_missing_model(data_dir, tmp_path):
    result = run("serve", "--data-dir", data_dir, "--model", str(tmp_path / "none.skops"))
    assert result.exit_code == 1 and result.output.count("\n") <= 2
    assert "Error:" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_worker_runs_queued_jobs_and_stops_on_sigterm(data_dir, small_model, g711_call):
    import os
    import signal
    import subprocess
    import sys
    import time

    from voicecheck.model import default_model_path

    key = run("keys", "create", "partner", "--data-dir", data_dir).output.split()[-1]
    app = create_app(
        {"data_dir": data_dir, "detector": small_model, "job_runner": False, "log_level": "WARNING"}
    )
    auth = {"Authorization": f"Bearer {key}"}
    c = app.test_client()
    job = c.post("/v1/jobs", data=g711_call, headers={**auth, "Content-Type": "audio/wav"}).json
    env = {
        **os.environ,
        "VOICECHECK_DATA_DIR": data_dir,
        "VOICECHECK_JOB_POLL_S": "0.2",
        "VOICECHECK_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicecheck.cli", "worker", "--model", str(default_model_path())],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while c.get(job["url"], headers=auth).json["status"] != "done":
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the worker did not finish the job within 60 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "job worker stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert c.get(job["url"], headers=auth).json["results"][0]["verdict"]


def test_keys_can_expire_and_list_shows_their_last_use(data_dir, small_model, g711_call):
    made = run("keys", "create", "pilot", "--expires-in", "30d", "--data-dir", data_dir)
    assert made.exit_code == 0 and "expires: 20" in made.output
    bad = run("keys", "create", "x", "--expires-in", "soon", "--data-dir", data_dir)
    assert bad.exit_code == 1 and "duration 'soon' is not understood" in bad.output
    _with_traffic(data_dir, small_model, g711_call)
    rows = [
        json.loads(x)
        for x in run("keys", "list", "--json", "--data-dir", data_dir).output.splitlines()
    ]
    by_name = {r["name"]: r for r in rows}
    assert by_name["pilot"]["expires_at"] and by_name["pilot"]["last_used_at"] is None
    assert by_name["partner"]["last_used_at"] is not None
    assert all("secret_sha256" not in r for r in rows)
