"""The /v1 scoring endpoints through the Flask test client: answers, errors, limits, audit."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest
import soundfile as sf
from conftest import make_service_app as make_app
from conftest import voiced

from voicecheck.service.auth import create_key

PROBLEM = "application/problem+json"


def wav_bytes(y: np.ndarray, sr: int = 8000, subtype: str = "ULAW") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def store_of(app):
    return app.extensions["voicecheck"].store


def audit_rows(app):
    return list(store_of(app).audit_rows())


# --- analyze ------------------------------------------------------------------------


def test_raw_g711_body_is_scored_with_every_field(client, auth, g711_call):
    r = client.post("/v1/analyze", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    assert r.status_code == 200, r.json
    body = r.json
    assert body["id"].startswith("an_")
    assert 0.0 <= body["score"] <= 1.0
    assert body["verdict"] in {"likely_cloned", "likely_human", "inconclusive"}
    assert set(body["thresholds"]) == {"cloned", "human", "eer"}
    assert body["sha256"] == hashlib.sha256(g711_call).hexdigest()
    assert body["size_bytes"] == len(g711_call)
    assert body["audio"]["codec"] == "pcm_mulaw"
    assert body["audio"]["sample_rate"] == 8000
    assert body["audio"]["channels"] == 1
    assert body["audio"]["duration_s"] == pytest.approx(10.0, abs=0.01)
    assert body["model"]["id"] == "test-small-" + body["model"]["id"].split("-")[-1]
    assert body["model"]["version"]
    assert body["processing_ms"] > 0
    segs = body["segments"]
    assert segs and segs[0]["start_s"] == 0.0 and segs[-1]["end_s"] <= 10.0
    assert all(s["score"] is None or 0 <= s["score"] <= 1 for s in segs)
    assert len(body["channels"]) == 1 and body["channels"][0]["score"] == body["score"]
    assert r.headers["X-Request-ID"]


def test_multipart_upload_keeps_a_non_ascii_file_name(client, auth, g711_call):
    data = {"file": (io.BytesIO(g711_call), "appel-électoral_№1.wav")}
    r = client.post("/v1/analyze", data=data, headers=auth)
    assert r.status_code == 200, r.json
    assert r.json["filename"] == "appel-électoral_№1.wav"


def test_raw_body_file_name_from_header(client, auth, g711_call):
    headers = {**auth, "Content-Type": "audio/wav", "X-Filename": "call-42.wav"}
    r = client.post("/v1/analyze", data=g711_call, headers=headers)
    assert r.json["filename"] == "call-42.wav"
    headers["X-Filename"] = "appel%C3%A9.wav"  # percent-encoded UTF-8
    r = client.post("/v1/analyze", data=g711_call, headers=headers)
    assert r.json["filename"] == "appelé.wav"


def test_stereo_call_gets_a_result_per_channel(client, auth):
    left = voiced(6.0, sr=8000, f0=120, seed=1)
    right = np.zeros_like(left)  # the other party stays silent
    data = wav_bytes(np.stack([left, right], axis=1), subtype="PCM_16")
    r = client.post("/v1/analyze", data=data, headers={**auth, "Content-Type": "audio/wav"})
    assert r.status_code == 200, r.json
    channels = r.json["channels"]
    assert [c["channel"] for c in channels] == [0, 1]
    assert channels[0]["score"] == r.json["score"]
    assert channels[1]["score"] is None and channels[1]["error"]["code"] == "no_speech"


def test_stored_analysis_reads_back_the_same(client, auth, g711_call):
    headers = {**auth, "Content-Type": "audio/wav"}
    first = client.post("/v1/analyze", data=g711_call, headers=headers)
    again = client.get(first.json["url"], headers=auth)
    assert again.status_code == 200
    assert again.json == first.json


def test_other_keys_cannot_read_a_result_but_admin_can(service_app, client, auth, g711_call):
    made = client.post("/v1/analyze", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    other = create_key(store_of(service_app), "other")[1]
    admin = create_key(store_of(service_app), "ops", scopes=["admin"])[1]
    r = client.get(made.json["url"], headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404 and r.mimetype == PROBLEM and r.json["code"] == "not_found"
    r = client.get(made.json["url"], headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200 and r.json["id"] == made.json["id"]


def test_unknown_analysis_is_a_404_problem(client, auth):
    r = client.get("/v1/analyses/an_0000", headers=auth)
    assert r.status_code == 404 and r.mimetype == PROBLEM
    assert "an_0000" in r.json["detail"]


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 422, "empty_audio"),
        (b"this is a text file, not a recording" * 20, 415, "unsupported_format"),
        (wav_bytes(np.zeros(16000, dtype=np.float32)), 422, "no_speech"),
        (wav_bytes(voiced(2.0, sr=8000))[:300], 422, "corrupt_audio"),
        (wav_bytes(voiced(0.2, sr=8000)), 422, "audio_too_short"),
    ],
    ids=["empty", "text", "silence", "truncated", "short"],
)
def test_bad_audio_gets_a_problem_with_a_stable_code(client, auth, data, status, code):
    r = client.post("/v1/analyze", data=data, headers={**auth, "Content-Type": "audio/wav"})
    assert r.status_code == status
    assert r.mimetype == PROBLEM
    body = r.json
    assert body["code"] == code and body["status"] == status
    assert body["detail"] and "Traceback" not in r.get_data(as_text=True)
    assert body["request_id"] == r.headers["X-Request-ID"]


def test_non_audio_content_type_is_415_listing_the_supported_types(client, auth):
    r = client.post("/v1/analyze", data=b"{}", headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 415 and r.mimetype == PROBLEM
    assert "audio/wav" in r.json["supported_types"] and "audio/amr" in r.json["supported_types"]


def test_missing_file_part_is_a_400_naming_it(client, auth, g711_call):
    r = client.post("/v1/analyze", data={"audio": (io.BytesIO(g711_call), "a.wav")}, headers=auth)
    assert r.status_code == 400 and r.json["code"] == "bad_request"
    assert "'file'" in r.json["detail"] and "audio" in r.json["detail"]


def test_no_body_at_all_is_a_400(client, auth):
    r = client.post("/v1/analyze", headers=auth)
    assert r.status_code == 400 and r.mimetype == PROBLEM


def test_file_over_the_upload_limit_is_413(tmp_path, small_model, g711_call):
    app = make_app(tmp_path, small_model, max_upload_mb=0.05)
    key = create_key(store_of(app), "k")[1]
    c = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    r = c.post("/v1/analyze", data={"file": (io.BytesIO(g711_call), "big.wav")}, headers=headers)
    assert r.status_code == 413 and r.json["code"] == "file_too_large"
    assert "big.wav" in r.json["detail"] and "0.05 MiB" in r.json["detail"]
    r = c.post("/v1/analyze", data=g711_call, headers={**headers, "Content-Type": "audio/wav"})
    assert r.status_code == 413 and r.mimetype == PROBLEM


def test_request_over_the_body_limit_is_413_problem(tmp_path, small_model, g711_call):
    app = make_app(tmp_path, small_model, max_request_mb=0.05)
    key = create_key(store_of(app), "k")[1]
    r = app.test_client().post(
        "/v1/analyze/batch",
        data={"file": [(io.BytesIO(g711_call), "a.wav"), (io.BytesIO(g711_call), "b.wav")]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 413 and r.mimetype == PROBLEM
    assert r.json["code"] == "request_too_large"
    rows = audit_rows(app)
    assert rows[-1]["status"] == 413 and rows[-1]["outcome"] == "request_too_large"


def test_recording_too_long_for_a_synchronous_answer_points_to_jobs(
    tmp_path, small_model, g711_call
):
    app = make_app(tmp_path, small_model, max_sync_duration_s=5)
    key = create_key(store_of(app), "k")[1]
    r = app.test_client().post(
        "/v1/analyze",
        data=g711_call,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "audio/wav"},
    )
    assert r.status_code == 413 and r.json["code"] == "audio_too_long"
    assert "/v1/jobs" in r.json["detail"]


def test_unknown_path_and_wrong_method_are_problems(client, auth):
    r = client.get("/v2/analyze", headers=auth)
    assert r.status_code == 404 and r.mimetype == PROBLEM and r.json["code"] == "not_found"
    r = client.put("/v1/analyze", headers=auth)
    assert r.status_code == 405 and r.json["code"] == "method_not_allowed"
    assert "POST" in r.headers["Allow"]


def test_an_unexpected_failure_is_a_500_problem_without_a_traceback(
    service_app, client, auth, g711_call, monkeypatch
):
    detector = service_app.extensions["voicecheck"].detector

    def broken(X):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(detector, "predict_proba", broken)
    r = client.post("/v1/analyze", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    assert r.status_code == 500 and r.mimetype == PROBLEM
    assert r.json["code"] == "internal_error"
    text = r.get_data(as_text=True)
    assert "secret internal detail" not in text and "Traceback" not in text
    assert audit_rows(service_app)[-1]["status"] == 500


def test_no_result_is_sent_when_its_audit_row_cannot_be_written(
    service_app, client, auth, g711_call, monkeypatch
):
    from voicecheck.service.store import StoreError

    store = store_of(service_app)

    def fail(*args, **kwargs):
        raise StoreError("the store failed: disk I/O error")

    monkeypatch.setattr(store, "save_analysis", fail)
    r = client.post("/v1/analyze", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    assert r.status_code == 503 and r.json["code"] == "store_unavailable"
    assert "score" not in r.json


# --- batch ---------------------------------------------------------------------------


def test_batch_scores_each_file_and_reports_each_failure(client, auth, g711_call):
    files = [
        (io.BytesIO(g711_call), "one.wav"),
        (io.BytesIO(b"not audio at all" * 50), "notes.txt"),
        (io.BytesIO(g711_call), "two.wav"),
    ]
    r = client.post("/v1/analyze/batch", data={"file": files}, headers=auth)
    assert r.status_code == 200
    body = r.json
    assert body["count"] == 3 and body["failed"] == 1
    assert [x["index"] for x in body["results"]] == [0, 1, 2]
    assert body["results"][0]["filename"] == "one.wav" and "score" in body["results"][0]
    bad = body["results"][1]
    assert bad["filename"] == "notes.txt" and bad["error"]["code"] == "unsupported_format"
    assert client.get(body["results"][2]["url"], headers=auth).status_code == 200


def test_batch_over_its_file_limit_is_refused(tmp_path, small_model, g711_call):
    app = make_app(tmp_path, small_model, max_batch_files=2)
    key = create_key(store_of(app), "k")[1]
    files = [(io.BytesIO(g711_call), f"{i}.wav") for i in range(3)]
    r = app.test_client().post(
        "/v1/analyze/batch", data={"file": files}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 400 and r.json["max_files"] == 2 and "/v1/jobs" in r.json["detail"]


def test_single_analyze_refuses_several_files(client, auth, g711_call):
    files = [(io.BytesIO(g711_call), "a.wav"), (io.BytesIO(g711_call), "b.wav")]
    r = client.post("/v1/analyze", data={"file": files}, headers=auth)
    assert r.status_code == 400 and "/v1/analyze/batch" in r.json["detail"]


# --- audit and retention -------------------------------------------------------------


def test_every_analysis_and_refusal_is_in_the_audit_log(service_app, client, auth, g711_call):
    ok = client.post(
        "/v1/analyze",
        data=g711_call,
        headers={**auth, "Content-Type": "audio/wav", "X-Request-ID": "carrier-req-7"},
    )
    client.post("/v1/analyze", data=g711_call, headers={"Content-Type": "audio/wav"})
    client.post("/v1/analyze", data=b"garbage" * 99, headers={**auth, "Content-Type": "audio/wav"})
    rows = audit_rows(service_app)
    assert [(r["status"], r["outcome"]) for r in rows] == [
        (200, "ok"),
        (401, "unauthorized"),
        (415, "unsupported_format"),
    ]
    good, unauth, bad = rows
    assert good["request_id"] == "carrier-req-7" == ok.headers["X-Request-ID"]
    assert good["key_name"] == "test-partner" and good["analysis_id"] == ok.json["id"]
    assert good["sha256"] == ok.json["sha256"] and good["size_bytes"] == len(g711_call)
    assert good["duration_s"] == pytest.approx(10.0, abs=0.01)
    assert good["verdict"] == ok.json["verdict"] and good["score"] == ok.json["score"]
    assert good["model_id"] == ok.json["model"]["id"]
    assert good["client_addr"] == "127.0.0.1"
    assert unauth["key_id"] is None and unauth["size_bytes"] == len(g711_call)
    assert bad["sha256"] == hashlib.sha256(b"garbage" * 99).hexdigest()


def test_audio_is_not_kept_unless_retention_asks(tmp_path, small_model, client, auth, g711_call):
    client.post("/v1/analyze", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    data_dir = client.application.extensions["voicecheck"].settings.data_dir
    assert not os.path.exists(os.path.join(data_dir, "audio"))

    app = make_app(tmp_path / "kept", small_model, retain_audio=True)
    key = create_key(store_of(app), "k")[1]
    r = app.test_client().post(
        "/v1/analyze",
        data=g711_call,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "audio/wav"},
    )
    row = store_of(app).get_analysis(r.json["id"])
    assert row["audio_path"] and open(row["audio_path"], "rb").read() == g711_call


# --- operations ----------------------------------------------------------------------


def test_health_ready_and_metrics_need_no_key(client, auth, g711_call):
    assert client.get("/healthz").json["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["store"] == "ok"
    client.post("/v1/analyze", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    client.post("/v1/analyze", data=b"", headers={**auth, "Content-Type": "audio/wav"})
    text = client.get("/metrics").get_data(as_text=True)
    line = 'voicecheck_http_requests_total{endpoint="/v1/analyze",method="POST",status="200"} 1.0'
    assert line in text
    assert "voicecheck_http_request_duration_seconds_bucket" in text
    assert 'voicecheck_errors_total{code="empty_audio"}' in text
    assert "voicecheck_verdicts_total{verdict=" in text
    assert "voicecheck_audio_seconds_total 10.0" in text


def test_readyz_is_503_when_the_store_is_gone(service_app, client, monkeypatch):
    from voicecheck.service.store import StoreError

    def down():
        raise StoreError("the store failed: unable to open database file")

    monkeypatch.setattr(store_of(service_app), "ping", down)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.mimetype == PROBLEM and r.json["code"] == "not_ready"
    assert "unable to open database file" in r.json["detail"]


def test_logs_are_json_lines_with_the_request_id(tmp_path, small_model, g711_call, capsys):
    app = make_app(tmp_path, small_model, log_format="json", log_level="INFO")
    app.test_client().get("/healthz", headers={"X-Request-ID": "trace-me-1"})
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    request_lines = [x for x in lines if x["message"] == "request"]
    assert request_lines[-1]["request_id"] == "trace-me-1"
    assert request_lines[-1]["status"] == 200 and request_lines[-1]["path"] == "/healthz"


def test_a_hostile_request_id_is_replaced(client):
    r = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert r.headers["X-Request-ID"] != "x" * 500 and len(r.headers["X-Request-ID"]) == 32


def test_a_file_part_without_a_file_name_gets_a_helpful_message(client, auth):
    r = client.post(
        "/v1/analyze", data={"file": "RIFF...."}, headers=auth, content_type="multipart/form-data"
    )
    assert r.status_code == 400 and "-F file=@call.wav" in r.json["detail"]
