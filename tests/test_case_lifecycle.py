"""A console case's lifecycle: deletion, legal hold, export as one ZIP."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_service_console import PASSWORD, csrf, sign_in, upload

from voicecheck.service.accounts import create_user
from voicecheck.service.audit import verify


@pytest.fixture
def store(service_app):
    return service_app.extensions["voicecheck"].store


@pytest.fixture
def data_dir(service_app):
    return service_app.extensions["voicecheck"].settings.data_dir


@pytest.fixture
def official(store):
    return create_user(store, "clerk", PASSWORD)


@pytest.fixture
def signed_in(client, official):
    assert sign_in(client).status_code == 303
    return client


@pytest.fixture
def case_id(signed_in, g711_call):
    r = upload(signed_in, [("call from 555.wav", g711_call)])
    assert r.status_code == 200, r.text
    return r.json["results"][0]["id"]


@pytest.fixture
def deputy(service_app, store):
    """Another official, signed in on a client of their own."""
    create_user(store, "deputy", PASSWORD)
    other = service_app.test_client()
    assert sign_in(other, name="deputy").status_code == 303
    return other


def _files(data_dir) -> list[Path]:
    return sorted(p for p in (Path(data_dir) / "audio").rglob("*") if p.is_file())


def _render(client, case_id) -> None:
    assert client.get(f"/cases/{case_id}/timeline.png").status_code == 200
    assert client.get(f"/cases/{case_id}/audio.wav").status_code == 200


def _post(client, case_id, action, **data):
    token = csrf(client, f"/cases/{case_id}")
    return client.post(f"/cases/{case_id}/{action}", data={"csrf_token": token, **data})


def _other_recording(g711_call) -> bytes:
    y, sr = sf.read(io.BytesIO(g711_call), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, np.roll(y, sr // 3) * 0.8, sr, format="WAV", subtype="ULAW")
    return buf.getvalue()


# --- deletion ---------------------------------------------------------------------------


def test_the_owner_deletes_a_case_after_confirming(signed_in, case_id, store, data_dir):
    _render(signed_in, case_id)
    token = csrf(signed_in, f"/cases/{case_id}")
    signed_in.post(f"/cases/{case_id}/notes", data={"csrf_token": token, "text": "ward 3"})
    assert len(_files(data_dir)) == 3  # the call, its timeline, its playable WAV
    before = store.get_analysis(case_id)

    page = signed_in.get(f"/cases/{case_id}")
    assert f'href="/cases/{case_id}/delete"' in page.text
    confirm = signed_in.get(f"/cases/{case_id}/delete")
    assert confirm.status_code == 200
    assert "Delete this case?" in confirm.text and "cannot be undone" in confirm.text
    assert f'action="/cases/{case_id}/delete"' in confirm.text
    # without the form's token nothing happens
    assert signed_in.post(f"/cases/{case_id}/delete").status_code == 403
    assert len(_files(data_dir)) == 3

    r = _post(signed_in, case_id, "delete")
    assert r.status_code == 303 and r.headers["Location"] == f"/cases/{case_id}"
    assert _files(data_dir) == []  # audio and every render, at once
    row = store.get_analysis(case_id)
    assert row["sha256"] == before["sha256"]
    assert row["verdict"] == before["verdict"] and row["score"] == before["score"]
    assert row["deleted_by"] == "clerk" and abs(row["deleted_at"] - time.time()) < 60
    assert row["filename"] is None and row["audio_path"] is None
    assert json.loads(row["result"]) == {}
    assert store.notes(case_id) == []
    deleted = [a for a in store.case_audit_rows(case_id) if a["outcome"] == "case_deleted"]
    assert len(deleted) == 1 and deleted[0]["user_name"] == "clerk" and deleted[0]["hash"]
    assert verify(store).ok

    page = signed_in.get(f"/cases/{case_id}")
    assert page.status_code == 200
    assert "This case was deleted" in page.text and "clerk" in page.text
    assert "call from 555.wav" not in page.text
    assert "ward 3" not in page.text and "Download" not in page.text
    assert "deleted case" in signed_in.get("/cases").text


@pytest.mark.parametrize(
    "path", ["report.pdf", "report.json", "audio.wav", "timeline.png", "export.zip"]
)
def test_a_deleted_case_has_no_contents_to_give(signed_in, case_id, path):
    assert _post(signed_in, case_id, "delete").status_code == 303
    r = signed_in.get(f"/cases/{case_id}/{path}")
    assert r.status_code == 410 and r.mimetype == "text/html"
    assert "Case deleted" in r.text and "was deleted on" in r.text and "by clerk" in r.text
    api = signed_in.get(f"/cases/{case_id}/{path}", headers={"Accept": "application/json"})
    assert api.status_code == 410 and api.json["code"] == "case_deleted"


def test_deleting_twice_or_writing_notes_on_a_deleted_case_is_explained(signed_in, case_id):
    token = csrf(signed_in, f"/cases/{case_id}")
    assert _post(signed_in, case_id, "delete").status_code == 303
    r = signed_in.post(f"/cases/{case_id}/delete", data={"csrf_token": token})
    assert r.status_code == 410 and "was deleted" in r.text
    r = signed_in.post(f"/cases/{case_id}/notes", data={"csrf_token": token, "text": "x"})
    assert r.status_code == 410


def test_the_same_recording_in_another_case_keeps_its_file(signed_in, g711_call, data_dir):
    r = upload(signed_in, [("first.wav", g711_call), ("second.wav", g711_call)])
    first, second = (x["id"] for x in r.json["results"])
    _render(signed_in, first)
    _render(signed_in, second)
    assert _post(signed_in, first, "delete").status_code == 303
    names = [p.name for p in _files(data_dir)]
    assert not [n for n in names if first in n]  # the deleted case's timeline is gone
    assert signed_in.get(f"/cases/{second}/audio.wav").status_code == 200
    assert signed_in.get(f"/cases/{second}/timeline.png").status_code == 200
    assert _post(signed_in, second, "delete").status_code == 303
    assert _files(data_dir) == []


def test_another_official_cannot_delete_or_hold_a_case(deputy, case_id, store, data_dir):
    page = deputy.get(f"/cases/{case_id}")
    assert page.status_code == 200
    assert "/delete" not in page.text and "Put under legal hold" not in page.text
    assert "Export the case" in page.text
    assert deputy.get(f"/cases/{case_id}/delete").status_code == 403
    r = _post(deputy, case_id, "delete")
    assert r.status_code == 403 and "Only the official who made this case" in r.text
    assert _post(deputy, case_id, "legal-hold", hold="on").status_code == 403
    row = store.get_analysis(case_id)
    assert row["deleted_at"] is None and row["legal_hold_at"] is None
    assert len(_files(data_dir)) == 1


def test_an_admin_may_delete_any_case(service_app, store, case_id, data_dir):
    from voicecheck.service.store import users

    if "role" not in users.c:
        pytest.skip("this store has no user roles yet")
    admin = create_user(store, "supervisor", PASSWORD)
    store.update_user(admin["id"], role="admin")
    other = service_app.test_client()
    assert sign_in(other, name="supervisor").status_code == 303
    assert _post(other, case_id, "delete").status_code == 303
    assert store.get_analysis(case_id)["deleted_by"] == "supervisor"
    assert _files(data_dir) == []


def test_unknown_cases_are_explained(signed_in):
    token = csrf(signed_in)
    for r in (
        signed_in.get("/cases/an_missing/delete"),
        signed_in.post("/cases/an_missing/delete", data={"csrf_token": token}),
        signed_in.post("/cases/an_missing/legal-hold", data={"csrf_token": token, "hold": "on"}),
        signed_in.get("/cases/an_missing/export.zip"),
    ):
        assert r.status_code == 404 and r.mimetype == "text/html"
        assert "the case does not exist" in r.text


# --- legal hold -------------------------------------------------------------------------


def test_a_legal_hold_blocks_deletion_until_cleared(signed_in, case_id, store, data_dir):
    r = _post(signed_in, case_id, "legal-hold", hold="on")
    assert r.status_code == 303
    page = signed_in.get(f"/cases/{case_id}")
    assert "Under legal hold" in page.text and "set by clerk" in page.text
    assert f'href="/cases/{case_id}/delete"' not in page.text
    assert "Clear the legal hold" in page.text
    for r in (signed_in.get(f"/cases/{case_id}/delete"), _post(signed_in, case_id, "delete")):
        assert r.status_code == 409
        assert "under legal hold" in r.text and "cannot be deleted" in r.text
    assert store.get_analysis(case_id)["deleted_at"] is None
    assert len(_files(data_dir)) == 1

    assert _post(signed_in, case_id, "legal-hold", hold="off").status_code == 303
    assert "Not under legal hold" in signed_in.get(f"/cases/{case_id}").text
    outcomes = [a["outcome"] for a in store.case_audit_rows(case_id)]
    assert outcomes.count("legal_hold_set") == 1 and outcomes.count("legal_hold_cleared") == 1
    assert _post(signed_in, case_id, "delete").status_code == 303


def test_a_hold_needs_a_clear_choice(signed_in, case_id):
    r = _post(signed_in, case_id, "legal-hold", hold="maybe")
    assert r.status_code == 400 and "hold=on" in r.text


def test_the_retention_purge_skips_held_cases(tmp_path, small_model, g711_call):
    from conftest import make_service_app

    app = make_service_app(tmp_path, small_model, retention_days=1)
    svc = app.extensions["voicecheck"]
    create_user(svc.store, "clerk", PASSWORD)
    client = app.test_client()
    sign_in(client)
    r = upload(client, [("held.wav", g711_call), ("unheld.wav", _other_recording(g711_call))])
    held, unheld = (x["id"] for x in r.json["results"])
    assert _post(client, held, "legal-hold", hold="on").status_code == 303
    held_audio = svc.store.get_analysis(held)["audio_path"]
    unheld_audio = svc.store.get_analysis(unheld)["audio_path"]
    assert held_audio != unheld_audio

    assert svc.runner.purge_audio(now=time.time() + 30 * 86400) == 1
    assert svc.store.get_analysis(held)["audio_path"] == held_audio
    assert svc.store.get_analysis(unheld)["audio_path"] is None
    files = [str(p) for p in (tmp_path / "data" / "audio").rglob("*") if p.is_file()]
    assert files == [held_audio]
    assert client.get(f"/cases/{held}/audio.wav").status_code == 200
    assert client.get(f"/cases/{unheld}/audio.wav").status_code == 404
    svc.store.dispose()


# --- export -----------------------------------------------------------------------------


def _chain_ok(lines: list[str]) -> list[dict]:
    """The export's audit entries, each hash recomputed as the audit module documents it."""
    entries = []
    for line in lines:
        entry = json.loads(line)
        doc = {k: v for k, v in entry["row"].items() if v is not None}
        for k in ("time", "duration_s", "processing_ms", "score"):
            if k in doc:
                doc[k] = format(doc[k], ".6f")
        doc.update(seq=entry["seq"], prev_hash=entry["prev_hash"])
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == entry["hash"]
        entries.append(entry)
    return entries


def test_export_is_one_zip_with_a_manifest_of_hashes(signed_in, case_id, store, g711_call):
    r = signed_in.get(f"/cases/{case_id}/export.zip")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert (
        "attachment" in r.headers["Content-Disposition"]
        and ".zip" in r.headers["Content-Disposition"]
    )
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    names = zf.namelist()
    assert names == [
        "manifest.json",
        "report.json",
        "report.pdf",
        "timeline.png",
        "audit.jsonl",
        "original/call from 555.wav",
    ]
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["case_id"] == case_id
    assert manifest["schema"] == "voicecheck.case-export/1"
    assert manifest["generated_at"].endswith("Z") and manifest["voicecheck_version"]
    assert [f["name"] for f in manifest["files"]] == names[1:]
    for f in manifest["files"]:
        data = zf.read(f["name"])
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert len(data) == f["size_bytes"]
    row = store.get_analysis(case_id)
    assert zf.read("original/call from 555.wav") == g711_call
    assert hashlib.sha256(g711_call).hexdigest() == row["sha256"]
    report = json.loads(zf.read("report.json"))
    assert report["schema"] == "voicecheck.evidence/1" and report["id"] == case_id
    assert zf.read("report.pdf").startswith(b"%PDF")
    assert zf.read("timeline.png")[:8] == b"\x89PNG\r\n\x1a\n"
    entries = _chain_ok(zf.read("audit.jsonl").decode().splitlines())
    assert entries and all(e["row"]["analysis_id"] == case_id for e in entries)
    chained = {a["hash"] for a in store.case_audit_rows(case_id) if a["hash"]}
    assert {e["hash"] for e in entries} <= chained
    exports = [a for a in store.case_audit_rows(case_id) if a["outcome"] == "case_export"]
    assert len(exports) == 1 and exports[0]["user_name"] == "clerk"


def test_export_without_kept_audio_leaves_out_the_recording(tmp_path, small_model, g711_call):
    from conftest import make_service_app

    app = make_service_app(tmp_path, small_model, console_keep_audio=False)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    client = app.test_client()
    sign_in(client)
    case_url = upload(client, [("call.wav", g711_call)]).json["results"][0]["url"]
    zf = zipfile.ZipFile(io.BytesIO(client.get(case_url + "/export.zip").data))
    assert zf.namelist() == ["manifest.json", "report.json", "report.pdf", "audit.jsonl"]
    app.extensions["voicecheck"].store.dispose()
