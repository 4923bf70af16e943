"""The web console: sign-in, uploads, result pages, evidence reports and case history."""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from voicecheck.service.accounts import create_user

PASSWORD = "correct horse battery"


@pytest.fixture
def store(service_app):
    return service_app.extensions["voicecheck"].store


@pytest.fixture
def official(store):
    return create_user(store, "clerk", PASSWORD)


def _pre_csrf(client) -> str:
    page = client.get("/sign-in")
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(client, name="clerk", password=PASSWORD, **extra):
    token = _pre_csrf(client)
    return client.post(
        "/sign-in", data={"name": name, "password": password, "csrf_token": token, **extra}
    )


def csrf(client, path="/upload") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)


@pytest.fixture
def signed_in(client, official):
    assert sign_in(client).status_code == 303
    return client


def upload(client, files, *, script=True, token=None):
    """POST /upload as the page's script would (JSON back) or as a plain form."""
    token = csrf(client) if token is None else token
    data = {"csrf_token": token, "file": [(io.BytesIO(b), name) for name, b in files]}
    headers = {"Accept": "application/json", "X-CSRF-Token": token} if script else {}
    return client.post("/upload", data=data, headers=headers, content_type="multipart/form-data")


@pytest.fixture
def case_id(signed_in, g711_call):
    r = upload(signed_in, [("call from 555.wav", g711_call)])
    assert r.status_code == 200, r.text
    return r.json["results"][0]["id"]


# --- sign-in, sessions, CSRF, lock-out -----------------------------------------------------


def test_pages_need_sign_in_and_remember_where_to_go(client, official):
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/sign-in")
    r = client.get("/cases?verdict=likely_cloned")
    assert r.status_code == 302
    assert "/sign-in?next=" in r.headers["Location"]
    token = _pre_csrf(client)
    r = client.post(
        "/sign-in",
        data={
            "name": "clerk",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "/cases?verdict=likely_cloned",
        },
    )
    assert r.status_code == 303
    assert r.headers["Location"] == "/cases?verdict=likely_cloned"


def test_sign_in_sets_a_protected_session_cookie(client, official, store):
    r = sign_in(client)
    assert r.status_code == 303 and r.headers["Location"] == "/upload"
    cookie = next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("voicecheck_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    # only a digest of the token is stored
    with store.begin() as conn:
        ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM web_sessions")]
    assert len(ids) == 1 and token not in ids[0]
    page = client.get("/upload")
    assert page.status_code == 200
    assert "Signed in as" in page.text and "clerk" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_wrong_password_and_missing_form_token_are_refused(client, official, store):
    r = sign_in(client, password="not the password")
    assert r.status_code == 401
    assert "user name or the password is wrong" in r.text
    r = sign_in(client, name="nobody", password=PASSWORD)
    assert r.status_code == 401
    assert "user name or the password is wrong" in r.text
    r = client.post("/sign-in", data={"name": "clerk", "password": PASSWORD})
    assert r.status_code == 403 and "expired" in r.text
    assert client.get_cookie("voicecheck_session") is None
    rows = list(store.audit_rows())
    assert [r["outcome"] for r in rows].count("sign_in_failed") == 2
    assert {r["user_name"] for r in rows if r["outcome"] == "sign_in_failed"} == {"clerk", "nobody"}


def test_repeated_failures_lock_the_account(client, official, store):
    for _ in range(4):
        assert sign_in(client, password="wrong password").status_code == 401
    r = sign_in(client, password="wrong password")
    assert r.status_code == 401 and "now locked for 15 minutes" in r.text
    # while locked, even the right password is refused
    r = sign_in(client)
    assert r.status_code == 401 and "locked" in r.text
    # unlocking (what `voicecheck users unlock` does) lets the official in again
    store.update_user(official["id"], locked_until=None, failed_count=0)
    assert sign_in(client).status_code == 303


def test_a_successful_sign_in_resets_the_failure_count(client, official, store):
    for _ in range(4):
        sign_in(client, password="wrong password")
    assert sign_in(client).status_code == 303
    assert store.get_user(name="clerk")["failed_count"] == 0


def test_sign_out_ends_the_session_on_the_server(signed_in, store):
    cookie = signed_in.get_cookie("voicecheck_session").value
    r = signed_in.post("/sign-out", data={})
    assert r.status_code == 403  # no CSRF token
    token = csrf(signed_in)
    r = signed_in.post("/sign-out", data={"csrf_token": token})
    assert r.status_code == 303 and "signed_out=1" in r.headers["Location"]
    # the old cookie, replayed, no longer opens anything
    signed_in.set_cookie("voicecheck_session", cookie)
    assert signed_in.get("/upload").status_code == 302
    assert "sign_out" in [r["outcome"] for r in store.audit_rows()]


def test_idle_sessions_end(tmp_path, small_model, g711_call):
    from conftest import make_service_app

    app = make_service_app(tmp_path, small_model, session_idle_minutes=0.001)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    client = app.test_client()
    assert sign_in(client).status_code == 303
    time.sleep(0.1)
    assert client.get("/upload").status_code == 302


def test_stale_sessions_are_cleared_from_the_store(signed_in, service_app, store):
    runner = service_app.extensions["voicecheck"].runner
    assert runner.end_stale_sessions() == 0
    assert runner.end_stale_sessions(now=time.time() + 2 * 3600) == 1
    assert signed_in.get("/upload").status_code == 302


def test_disabled_users_are_signed_out(signed_in, store, official):
    store.update_user(official["id"], disabled_at=time.time())
    assert signed_in.get("/upload").status_code == 302
    r = sign_in(signed_in)
    assert r.status_code == 401 and "disabled" in r.text


def test_next_never_leaves_the_site(client, official):
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        r = sign_in(client, next=target)
        assert r.status_code == 303 and r.headers["Location"] == "/upload"
        client.delete_cookie("voicecheck_session")


# --- upload --------------------------------------------------------------------------------


def test_upload_scores_the_call_and_records_who_sent_it(signed_in, g711_call, store):
    r = upload(signed_in, [("call from 555.wav", g711_call)])
    assert r.status_code == 200
    (result,) = r.json["results"]
    assert result["verdict"] in {"likely_cloned", "likely_human", "inconclusive"}
    assert 0 <= result["score"] <= 1
    assert result["url"] == f"/cases/{result['id']}"
    row = store.get_analysis(result["id"])
    assert row["user_id"] and row["filename"] == "call from 555.wav"
    body = json.loads(row["result"])
    assert body["cues"] and body["rates"]["n_real"] > 0
    audit = [a for a in store.audit_rows() if a["analysis_id"] == result["id"]]
    assert audit[0]["user_name"] == "clerk" and audit[0]["outcome"] == "ok"


def test_upload_needs_the_session_token(signed_in, g711_call, store):
    r = upload(signed_in, [("call.wav", g711_call)], token="forged")
    assert r.status_code == 403
    assert r.mimetype == "application/problem+json" and r.json["code"] == "csrf_failed"
    assert not store.find_cases()[0]


def test_the_upload_script_is_told_when_the_session_has_ended(client, g711_call):
    r = client.post(
        "/upload",
        data={"file": [(io.BytesIO(g711_call), "call.wav")]},
        headers={"Accept": "application/json"},
        content_type="multipart/form-data",
    )
    assert r.status_code == 401
    assert r.mimetype == "application/problem+json" and r.json["code"] == "signed_out"


def test_bad_files_get_readable_messages(signed_in, store):
    r = upload(signed_in, [("notes.txt", b"this is not audio at all" * 20)])
    assert r.status_code in (415, 422)
    assert r.mimetype == "application/problem+json"
    assert "notes.txt" in r.json["detail"] or "audio" in r.json["detail"]
    audit = [a for a in store.audit_rows() if a["filename"] == "notes.txt"]
    assert audit and audit[0]["status"] == r.status_code and audit[0]["user_name"] == "clerk"


def test_form_upload_without_script_lists_each_file(signed_in, g711_call):
    r = upload(signed_in, [("good.wav", g711_call), ("empty.wav", b"")], script=False)
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "good.wav" in r.text and "Open the result" in r.text
    assert "empty.wav" in r.text and "Not checked:" in r.text
    # one good file goes straight to its result page
    r = upload(signed_in, [("good.wav", g711_call)], script=False)
    assert r.status_code == 303 and r.headers["Location"].startswith("/cases/an_")


def test_files_over_the_limit_are_refused(tmp_path, small_model, g711_call):
    from conftest import make_service_app

    app = make_service_app(tmp_path, small_model, max_upload_mb=0.05)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    client = app.test_client()
    sign_in(client)
    r = upload(client, [("long.wav", g711_call)])
    assert r.status_code == 413
    assert "at most 0.05 MiB" in r.json["detail"]
    page = client.get("/upload")
    assert 'data-max-bytes="52428"' in page.text


def test_upload_with_no_file_is_explained(signed_in):
    token = csrf(signed_in)
    r = signed_in.post("/upload", data={"csrf_token": token}, content_type="multipart/form-data")
    assert r.status_code == 400 and "choose at least one recording" in r.text.lower()
    assert r.mimetype == "text/html"


# --- result page, evidence -----------------------------------------------------------------


def test_result_page_explains_the_verdict(signed_in, case_id, store):
    page = signed_in.get(f"/cases/{case_id}")
    assert page.status_code == 200
    text = page.text
    row = store.get_analysis(case_id)
    body = json.loads(row["result"])
    assert f"{body['score']:.2f}" in text
    assert "in our tests" in text.lower()
    # The verdicts' measured error rates on sites the model never saw, from its card.
    assert "On recordings from 12 sites the model never saw, 1% of real voices" in text
    assert row["sha256"] in text
    assert "call from 555.wav" in text
    assert body["model"]["id"] in text
    assert f'src="/cases/{case_id}/timeline.png"' in text
    assert f'src="/cases/{case_id}/audio.wav"' in text
    assert 'data-seek="0.0"' in text  # the table's times play the call from there
    assert body["cues"][0]["title"] in text
    assert "pcm_mulaw" in text and "8000 Hz" in text


def test_timeline_and_audio(signed_in, case_id):
    png = signed_in.get(f"/cases/{case_id}/timeline.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data[:8] == b"\x89PNG\r\n\x1a\n"
    wav = signed_in.get(f"/cases/{case_id}/audio.wav")
    assert wav.status_code == 200 and wav.mimetype == "audio/wav"
    y, sr = sf.read(io.BytesIO(wav.data))
    assert abs(len(y) / sr - 10.0) < 0.1
    part = signed_in.get(f"/cases/{case_id}/audio.wav", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.data) == 100


def test_evidence_report_pdf_and_json(signed_in, case_id, store):
    from pypdf import PdfReader

    row = store.get_analysis(case_id)
    # the rows chained before the report was asked for (its own row comes after)
    chained = [a for a in store.case_audit_rows(case_id) if a["hash"]]
    r = signed_in.get(f"/cases/{case_id}/report.pdf")
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert "attachment" in r.headers["Content-Disposition"]
    assert ".pdf" in r.headers["Content-Disposition"]
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(r.data)).pages)
    flat = re.sub(r"\s+", "", text)
    assert row["sha256"] in flat
    assert json.loads(row["result"])["model"]["id"] in flat
    assert chained and all(a["hash"] in flat for a in chained)  # the chain, to check
    r = signed_in.get(f"/cases/{case_id}/report.json")
    assert r.status_code == 200
    report = json.loads(r.data)
    assert report["schema"] == "voicecheck.evidence/1"
    assert report["sha256"] == row["sha256"] and report["id"] == case_id
    assert report["model"]["id"] == json.loads(row["result"])["model"]["id"]
    assert report["analysed_by"] == "clerk" and report["generated_at"].endswith("Z")
    assert {a["hash"] for a in chained} <= {a["hash"] for a in report["audit"]}
    outcomes = [a["outcome"] for a in store.audit_rows()]
    assert "report_pdf" in outcomes and "report_json" in outcomes


def test_stereo_calls_show_each_channel(signed_in, espeak_speech):
    y, sr = espeak_speech
    n = min(len(y), sr * 8)
    left = y[:n]
    right = np.roll(y[:n], sr // 2) * 0.5
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, right], axis=1), sr, format="WAV", subtype="PCM_16")
    r = upload(signed_in, [("stereo call.wav", buf.getvalue())])
    assert r.status_code == 200, r.text
    page = signed_in.get(r.json["results"][0]["url"])
    assert "Each side of the call" in page.text
    assert "1 (left)" in page.text and "2 (right)" in page.text
    png = signed_in.get(r.json["results"][0]["url"] + "/timeline.png")
    assert png.status_code == 200


def test_cases_without_kept_audio_still_show_the_scores(tmp_path, small_model, g711_call):
    from conftest import make_service_app

    app = make_service_app(tmp_path, small_model, console_keep_audio=False)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    client = app.test_client()
    sign_in(client)
    r = upload(client, [("call.wav", g711_call)])
    case_url = r.json["results"][0]["url"]
    page = client.get(case_url)
    assert "was not kept" in page.text and "timeline.png" not in page.text
    assert client.get(case_url + "/timeline.png").status_code == 404
    assert client.get(case_url + "/report.pdf").status_code == 200


def test_retention_deletes_console_audio_too(tmp_path, small_model, g711_call):
    from conftest import make_service_app

    app = make_service_app(tmp_path, small_model, retention_days=1)
    svc = app.extensions["voicecheck"]
    create_user(svc.store, "clerk", PASSWORD)
    client = app.test_client()
    sign_in(client)
    case_url = upload(client, [("call.wav", g711_call)]).json["results"][0]["url"]
    assert client.get(case_url + "/timeline.png").status_code == 200
    assert client.get(case_url + "/audio.wav").status_code == 200
    kept = list((tmp_path / "data" / "audio").rglob("*"))
    assert len([p for p in kept if p.is_file()]) == 3  # the call, its timeline, its WAV
    assert svc.runner.purge_audio(now=time.time() + 2 * 86400) == 1
    assert not [p for p in (tmp_path / "data" / "audio").rglob("*") if p.is_file()]
    assert client.get(case_url + "/audio.wav").status_code == 404
    assert client.get(case_url + "/timeline.png").status_code == 404
    assert "was not kept" in client.get(case_url).text


# --- notes, history --------------------------------------------------------------------------


def test_notes_are_kept_with_author_and_audited(signed_in, case_id, store):
    token = csrf(signed_in, f"/cases/{case_id}")
    note = "Reported by a voter in Ward 3; forwarded to the state office. Zürich 选举"
    r = signed_in.post(f"/cases/{case_id}/notes", data={"csrf_token": token, "text": note})
    assert r.status_code == 303
    page = signed_in.get(f"/cases/{case_id}")
    assert note in page.text
    report = json.loads(signed_in.get(f"/cases/{case_id}/report.json").data)
    assert report["notes"][0]["text"] == note and report["notes"][0]["author"] == "clerk"
    assert any(a["outcome"] == "note_added" for a in store.audit_rows())
    r = signed_in.post(f"/cases/{case_id}/notes", data={"csrf_token": token, "text": "  "})
    assert r.status_code == 400 and "the note is empty" in r.text.lower()
    r = signed_in.post(f"/cases/{case_id}/notes", data={"text": "no token"})
    assert r.status_code == 403
    assert len(store.notes(case_id)) == 1


def test_case_history_search(signed_in, g711_call, store):
    ids = {}
    for name in ("ward 3 robocall.wav", "hotline message.wav", "ward 7 voicemail.wav"):
        ids[name] = upload(signed_in, [(name, g711_call)]).json["results"][0]["id"]
    page = signed_in.get("/cases")
    assert "3 cases found." in page.text
    page = signed_in.get("/cases?q=WARD")
    assert "2 cases found." in page.text and "hotline" not in page.text
    sha = store.get_analysis(ids["hotline message.wav"])["sha256"]
    assert "3 cases found." in signed_in.get(f"/cases?q={sha[:12]}").text  # same audio
    verdict = store.get_analysis(ids["hotline message.wav"])["verdict"]
    others = [v for v in ("likely_cloned", "likely_human", "inconclusive") if v != verdict]
    assert "3 cases found." in signed_in.get(f"/cases?verdict={verdict}").text
    assert "0 cases found." in signed_in.get(f"/cases?verdict={others[0]}").text
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert "3 cases found." in signed_in.get(f"/cases?from={today}&to={today}").text
    assert "0 cases found." in signed_in.get("/cases?to=2020-01-01").text
    page = signed_in.get("/cases?from=yesterday")
    assert "is not a date like" in page.text
    assert "0 cases found." in signed_in.get("/cases?q=100%25").text


def test_a_recording_sent_again_points_to_its_other_cases(signed_in, g711_call):
    from pypdf import PdfReader

    first = upload(signed_in, [("voter 1.wav", g711_call)]).json["results"][0]
    page = signed_in.get(first["url"])
    assert "checked before" not in page.text
    second = upload(signed_in, [("voter 2.wav", g711_call)]).json["results"][0]
    page = signed_in.get(second["url"])
    assert "The same recording was checked before" in page.text
    assert f'href="{first["url"]}"' in page.text and "voter 1.wav" in page.text
    report = json.loads(signed_in.get(second["url"] + "/report.json").data)
    assert [r["id"] for r in report["same_recording"]] == [first["id"]]
    pdf = signed_in.get(second["url"] + "/report.pdf").data
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "The same recording in other cases" in text and first["id"] in text


def test_history_pages(signed_in, g711_call, store, monkeypatch):
    from voicecheck.service import console

    monkeypatch.setattr(console, "PAGE_SIZE", 2)
    for i in range(3):
        upload(signed_in, [(f"call {i}.wav", g711_call)])
    first = signed_in.get("/cases")
    assert "Page 1 of 2" in first.text and "call 2.wav" in first.text
    assert "call 0.wav" not in first.text
    second = signed_in.get("/cases?page=2")
    assert "call 0.wav" in second.text


def test_api_and_console_cases_stay_apart(signed_in, case_id, client, g711_call, auth):
    r = client.post("/v1/analyze", data=g711_call, headers={**auth, "Content-Type": "audio/wav"})
    api_id = r.json["id"]
    page = signed_in.get(f"/cases/{api_id}")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "1 case found." in signed_in.get("/cases").text
    r = client.get(f"/v1/analyses/{case_id}", headers=auth)
    assert r.status_code == 404 and r.mimetype == "application/problem+json"


def test_errors_on_pages_are_pages_and_api_errors_stay_problems(signed_in):
    page = signed_in.get("/cases/an_missing", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "<h1>" in page.text and "Back to the console" in page.text
    api = signed_in.get("/v1/nothing-here", headers={"Accept": "text/html"})
    assert api.mimetype == "application/problem+json"


def test_assets_are_served_locally(client):
    css = client.get("/static/console.css")
    js = client.get("/static/console.js")
    assert css.status_code == 200 and js.status_code == 200
    page = client.get("/sign-in").text
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith(("/", "#")) and not url.startswith("//"), url


def test_console_can_be_turned_off(tmp_path, small_model):
    from conftest import make_service_app

    app = make_service_app(tmp_path, small_model, console=False)
    r = app.test_client().get("/sign-in")
    assert r.status_code == 404 and r.mimetype == "application/problem+json"


# --- users CLI -------------------------------------------------------------------------------


def test_users_cli(tmp_path):
    from voicecheck.cli import main

    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    r = runner.invoke(
        main, ["users", "create", "clerk", "--password-stdin", *data], input="short\n"
    )
    assert r.exit_code == 1 and "at least 10 are needed" in r.output
    r = runner.invoke(
        main, ["users", "create", "clerk", "--password-stdin", *data], input=PASSWORD + "\n"
    )
    assert r.exit_code == 0, r.output
    assert "created user clerk" in r.output
    r = runner.invoke(
        main, ["users", "create", "clerk", "--password-stdin", *data], input=PASSWORD + "\n"
    )
    assert r.exit_code == 1 and "exists already" in r.output
    r = runner.invoke(main, ["users", "create", "clerk2", *data])
    assert r.exit_code == 1 and "--password-stdin" in r.output  # no terminal to prompt on
    r = runner.invoke(main, ["users", "list", "--json", *data])
    (user,) = [json.loads(line) for line in r.output.splitlines()]
    assert user["name"] == "clerk" and not user["locked"] and not user["disabled"]
    assert "password" not in json.dumps(user)
    r = runner.invoke(main, ["users", "disable", "clerk", *data])
    assert r.exit_code == 0 and "disabled clerk" in r.output
    r = runner.invoke(main, ["users", "list", *data])
    assert "disabled" in r.output
    r = runner.invoke(main, ["users", "unlock", "nobody", *data])
    assert r.exit_code == 1 and "no user is named 'nobody'" in r.output
    r = runner.invoke(
        main,
        ["users", "set-password", "clerk", "--password-stdin", *data],
        input="another long password\n",
    )
    assert r.exit_code == 0 and "sessions were ended" in r.output


def test_users_create_asks_for_the_password_on_a_terminal(tmp_path):
    """Without --password-stdin the password is asked for twice, hidden, on the terminal."""
    import os
    import pty
    import select
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECHECK_")}
    env["VOICECHECK_DATA_DIR"] = str(tmp_path / "data")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicecheck.cli", "users", "create", "clerk"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        close_fds=True,
    )
    os.close(secondary)
    seen = b""

    def read_until(text: bytes, timeout_s: float = 60.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout_s
        while text not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(primary, 1024)
                except OSError:
                    break
        assert text in seen, seen.decode(errors="replace")

    try:
        read_until(b"Password for clerk:")
        os.write(primary, (PASSWORD + "\n").encode())
        read_until(b"Repeat the password:")
        os.write(primary, (PASSWORD + "\n").encode())
        read_until(b"created user clerk")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    assert PASSWORD.encode() not in seen  # never echoed
    from voicecheck.service.store import Store

    store = Store(f"sqlite:///{tmp_path / 'data' / 'voicecheck.db'}")
    assert store.get_user(name="clerk") is not None
    store.dispose()
