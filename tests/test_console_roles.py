"""Console roles (admin, official, viewer), user management by admins, partner analyses."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from click.testing import CliRunner

from voicecheck.service.accounts import create_user, invite_user

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def store(service_app):
    return service_app.extensions["voicecheck"].store


@pytest.fixture
def people(store):
    return {
        role: create_user(store, name, PASSWORD, role=role)
        for role, name in (("admin", "boss"), ("official", "clerk"), ("viewer", "auditor"))
    }


def sign_in(client, name, password=PASSWORD):
    page = client.get("/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post("/sign-in", data={"name": name, "password": password, "csrf_token": token})


def csrf(client, path="/cases") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)


def client_as(service_app, name, password=PASSWORD):
    client = service_app.test_client()
    assert sign_in(client, name, password).status_code == 303
    return client


def console_upload(client, data: bytes, name="robocall.wav") -> str:
    token = csrf(client)
    r = client.post(
        "/upload",
        data={"csrf_token": token, "file": [(io.BytesIO(data), name)]},
        headers={"Accept": "application/json", "X-CSRF-Token": token},
        content_type="multipart/form-data",
    )
    assert r.status_code == 200, r.text
    return r.json["results"][0]["id"]


def link_token(page_text: str) -> str:
    link = re.search(r'id="set-password-link"[^>]*value="([^"]+)"', page_text).group(1)
    return link.split("?token=", 1)[1]


def audit_of(store, outcome):
    return [r for r in store.audit_rows() if r["outcome"] == outcome]


# --- roles on every route -------------------------------------------------------------------


def _state_changing_urls(app, case_id, user_id):
    """Every console route that takes more than GET, with its arguments filled in."""
    skip = {"console.sign_in", "console.sign_out", "console.set_password_page"}
    values = {"analysis_id": case_id, "user_id": user_id}
    with app.test_request_context():
        from flask import url_for

        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("console.") or rule.endpoint in skip:
                continue
            for method in sorted((rule.methods or set()) - {"GET", "HEAD", "OPTIONS"}):
                yield method, url_for(rule.endpoint, **{k: values[k] for k in rule.arguments})


def test_viewers_read_cases_but_every_change_is_refused(service_app, people, g711_call, store):
    case_id = console_upload(client_as(service_app, "clerk"), g711_call)
    viewer = service_app.test_client()
    r = sign_in(viewer, "auditor")
    assert r.status_code == 303
    # a viewer has no upload page: the console sends them to the case history
    r = viewer.get("/upload")
    assert r.status_code == 302 and r.headers["Location"].endswith("/cases")
    assert viewer.get("/").headers["Location"].endswith("/cases")
    page = viewer.get(f"/cases/{case_id}")
    assert page.status_code == 200 and "robocall.wav" in page.text
    assert "Add a note" not in page.text and "Check a call" not in page.text
    assert viewer.get(f"/cases/{case_id}/report.json").status_code == 200
    token = csrf(viewer)
    urls = list(_state_changing_urls(service_app, case_id, people["official"]["id"]))
    assert ("POST", "/upload") in urls and ("POST", f"/cases/{case_id}/notes") in urls
    for method, url in urls:
        r = viewer.open(
            url, method=method, data={"csrf_token": token, "text": "x", "role": "admin"}
        )
        assert r.status_code == 403, (method, url, r.status_code)
    r = viewer.post(
        "/upload",
        data={"csrf_token": token, "file": [(io.BytesIO(g711_call), "b.wav")]},
        headers={"Accept": "application/json", "X-CSRF-Token": token},
        content_type="multipart/form-data",
    )
    assert r.status_code == 403 and r.json["code"] == "forbidden"
    assert store.notes(case_id) == []
    assert store.find_cases()[1] == 1
    # signing out still works
    assert viewer.post("/sign-out", data={"csrf_token": token}).status_code == 303


def test_only_admins_reach_the_admin_pages(service_app, people):
    for name in ("clerk", "auditor"):
        client = client_as(service_app, name)
        assert client.get("/admin/users").status_code == 403
        assert client.get("/admin/partner-analyses").status_code == 403
        assert "/admin/users" not in client.get("/cases").text
        token = csrf(client)
        target = people["admin"]["id"]
        for url in (
            "/admin/users",
            f"/admin/users/{target}/disable",
            f"/admin/users/{target}/reset",
            f"/admin/users/{target}/role",
        ):
            r = client.post(url, data={"csrf_token": token, "name": "x", "role": "admin"})
            assert r.status_code == 403, url
    anonymous = service_app.test_client()
    assert anonymous.get("/admin/users").status_code == 302  # to the sign-in page
    admin = client_as(service_app, "boss")
    page = admin.get("/admin/users")
    assert page.status_code == 200
    assert all(name in page.text for name in ("boss", "clerk", "auditor", "viewer"))
    assert "Partner analyses" in page.text


def test_admin_forms_need_the_csrf_token(service_app, people, store):
    admin = client_as(service_app, "boss")
    r = admin.post("/admin/users", data={"name": "newcomer", "role": "official"})
    assert r.status_code == 403
    r = admin.post(f"/admin/users/{people['official']['id']}/disable", data={})
    assert r.status_code == 403
    assert store.get_user(name="newcomer") is None
    assert store.get_user(name="clerk")["disabled_at"] is None


# --- the one-time set-password link ----------------------------------------------------------


def test_a_new_user_sets_a_password_through_a_link_that_works_once(service_app, people, store):
    admin = client_as(service_app, "boss")
    r = admin.post(
        "/admin/users",
        data={"csrf_token": csrf(admin), "name": "newcomer", "role": "viewer"},
    )
    assert r.status_code == 201 and "It is shown only now" in r.text
    token = link_token(r.text)
    user = store.get_user(name="newcomer")
    assert user["role"] == "viewer" and token not in json.dumps(user)  # only its hash is kept
    assert user["link_expires_at"] == pytest.approx(time.time() + 48 * 3600, abs=60)
    # no password works before the link is used
    assert sign_in(service_app.test_client(), "newcomer", "").status_code == 401

    visitor = service_app.test_client()
    page = visitor.get(f"/set-password?token={token}")
    assert page.status_code == 200 and "newcomer" in page.text
    r = visitor.post(
        "/set-password", data={"token": token, "password": NEW_PASSWORD, "repeat": "other one"}
    )
    assert r.status_code == 400 and "differ" in r.text
    r = visitor.post("/set-password", data={"token": token, "password": "short", "repeat": "short"})
    assert r.status_code == 400 and "at least 10" in r.text
    r = visitor.post(
        "/set-password", data={"token": token, "password": NEW_PASSWORD, "repeat": NEW_PASSWORD}
    )
    assert r.status_code == 303 and "password_set=1" in r.headers["Location"]
    assert "Your password is set" in visitor.get(r.headers["Location"]).text
    # the link is now void
    assert visitor.get(f"/set-password?token={token}").status_code == 410
    r = visitor.post(
        "/set-password", data={"token": token, "password": "yet another one", "repeat": "x"}
    )
    assert r.status_code == 410
    assert sign_in(visitor, "newcomer", NEW_PASSWORD).status_code == 303
    assert visitor.get("/upload").headers["Location"].endswith("/cases")  # a viewer

    (created,) = audit_of(store, "user_created")
    assert (created["user_name"], created["target_user"], created["detail"]) == (
        "boss",
        "newcomer",
        "role viewer",
    )
    (used,) = audit_of(store, "password_set")
    assert used["target_user"] == "newcomer"
    assert all(token not in (r["path"] or "") for r in store.audit_rows())


def test_a_link_expires(service_app, people, store):
    _user, token = invite_user(store, "late", hours=-1 / 3600)
    r = service_app.test_client().get(f"/set-password?token={token}")
    assert r.status_code == 410 and "expired" in r.text
    r = service_app.test_client().post(
        "/set-password", data={"token": token, "password": NEW_PASSWORD, "repeat": NEW_PASSWORD}
    )
    assert r.status_code == 410
    assert service_app.test_client().get("/set-password?token=nonsense").status_code == 410


def test_a_new_user_name_must_be_free_and_the_role_known(service_app, people, store):
    admin = client_as(service_app, "boss")
    token = csrf(admin)
    r = admin.post("/admin/users", data={"csrf_token": token, "name": "clerk", "role": "viewer"})
    assert r.status_code == 400 and "exists already" in r.text
    r = admin.post("/admin/users", data={"csrf_token": token, "name": "x2", "role": "root"})
    assert r.status_code == 400 and "not known" in r.text
    assert store.get_user(name="x2") is None
    assert audit_of(store, "user_created") == []


# --- disable, reset, change role -------------------------------------------------------------


def test_disable_enable_reset_and_role_changes_are_audited(service_app, people, store):
    admin = client_as(service_app, "boss")
    clerk = client_as(service_app, "clerk")
    target = people["official"]["id"]
    token = csrf(admin)

    r = admin.post(f"/admin/users/{target}/disable", data={"csrf_token": token})
    assert r.status_code == 303
    assert clerk.get("/upload").status_code == 302  # signed out at once
    assert sign_in(service_app.test_client(), "clerk").status_code == 401
    assert "disabled" in admin.get("/admin/users").text
    assert (
        admin.post(f"/admin/users/{target}/enable", data={"csrf_token": token}).status_code == 303
    )
    clerk = client_as(service_app, "clerk")

    r = admin.post(f"/admin/users/{target}/role", data={"csrf_token": token, "role": "viewer"})
    assert r.status_code == 303
    assert store.get_user(user_id=target)["role"] == "viewer"
    # the open session gets the new role on its next request
    assert clerk.post("/upload", data={"csrf_token": csrf(clerk)}).status_code == 403

    r = admin.post(f"/admin/users/{target}/reset", data={"csrf_token": token})
    assert r.status_code == 200 and "old password no longer works" in r.text
    link = link_token(r.text)
    assert clerk.get("/cases").status_code == 302  # sessions ended
    assert sign_in(service_app.test_client(), "clerk").status_code == 401  # old password
    visitor = service_app.test_client()
    r = visitor.post(
        "/set-password", data={"token": link, "password": NEW_PASSWORD, "repeat": NEW_PASSWORD}
    )
    assert r.status_code == 303
    assert sign_in(visitor, "clerk", NEW_PASSWORD).status_code == 303

    changes = [
        (r["outcome"], r["user_name"], r["target_user"], r["detail"])
        for r in store.audit_rows()
        if r["target_user"] is not None
    ]
    assert changes == [
        ("user_disabled", "boss", "clerk", None),
        ("user_enabled", "boss", "clerk", None),
        ("user_role_changed", "boss", "clerk", "role official -> viewer"),
        ("user_reset", "boss", "clerk", "password voided, new set-password link"),
        ("password_set", "clerk", "clerk", "one-time link used"),
    ]
    from voicecheck.service.audit import verify  # the rows are in the hash chain

    assert verify(store).ok


def test_admins_cannot_change_their_own_account(service_app, people, store):
    admin = client_as(service_app, "boss")
    me = people["admin"]["id"]
    token = csrf(admin)
    for action, data in (("disable", {}), ("reset", {}), ("role", {"role": "viewer"})):
        r = admin.post(f"/admin/users/{me}/{action}", data={"csrf_token": token, **data})
        assert r.status_code == 400 and "your own account" in r.text
    assert store.get_user(user_id=me)["role"] == "admin"
    assert (
        admin.post("/admin/users/usr_nobody/disable", data={"csrf_token": token}).status_code == 404
    )


def test_users_from_before_roles_are_officials(service_app, people, store, g711_call):
    store.update_user(people["official"]["id"], role=None)
    clerk = client_as(service_app, "clerk")
    assert clerk.get("/upload").status_code == 200
    console_upload(clerk, g711_call)
    assert clerk.get("/admin/users").status_code == 403


# --- partner analyses ------------------------------------------------------------------------


def test_admins_see_partner_analyses_and_the_same_recording_both_ways(
    service_app, people, store, auth, g711_call
):
    from voicecheck.service.auth import create_key

    client = service_app.test_client()
    r = client.post(
        "/v1/analyze",
        data=g711_call,
        headers={**auth, "Content-Type": "audio/wav", "X-Filename": "partner-call.wav"},
    )
    assert r.status_code == 200, r.text
    verdict = r.json["verdict"]
    _other_id, other_secret = create_key(store, "other-partner")
    r = client.post(
        "/v1/analyze",
        data=g711_call[:-1] + bytes([g711_call[-1] ^ 1]),  # another recording
        headers={"Authorization": f"Bearer {other_secret}", "Content-Type": "audio/wav"},
    )
    assert r.status_code == 200, r.text
    case_id = console_upload(client_as(service_app, "clerk"), g711_call)

    admin = client_as(service_app, "boss")
    page = admin.get("/admin/partner-analyses")
    assert page.status_code == 200
    assert "2 analyses found" in page.text
    assert "test-partner" in page.text and "other-partner" in page.text
    assert page.text.count("Also a console case") == 1
    sha = store.get_analysis(case_id)["sha256"]
    assert f"/cases?q={sha}" in page.text
    (key,) = [k for k in store.list_keys() if k["name"] == "test-partner"]
    page = admin.get(f"/admin/partner-analyses?key={key['id']}")
    assert "1 analysis found" in page.text and "other-partner</td>" not in page.text

    page = admin.get(f"/cases/{case_id}")
    assert "A partner key already analysed this recording" in page.text
    assert "test-partner" in page.text
    from voicecheck.service.evidence import verdict_label

    assert f"verdict {verdict_label(verdict)}" in page.text
    clerk_page = client_as(service_app, "clerk").get(f"/cases/{case_id}")
    assert "A partner key already analysed" not in clerk_page.text


# --- the users CLI ---------------------------------------------------------------------------


def test_users_cli_takes_and_shows_the_role(tmp_path):
    from voicecheck.cli import main

    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    for name, role in (
        ("boss", ["--role", "admin"]),
        ("clerk", []),
        ("auditor", ["--role", "viewer"]),
    ):
        r = runner.invoke(
            main, ["users", "create", name, *role, "--password-stdin", *data], input=PASSWORD + "\n"
        )
        assert r.exit_code == 0, r.output
    assert "viewer" in r.output
    r = runner.invoke(
        main, ["users", "create", "x", "--role", "root", "--password-stdin", *data], input="p\n"
    )
    assert r.exit_code == 2 and "root" in r.output
    r = runner.invoke(main, ["users", "list", "--json", *data])
    roles = {u["name"]: u["role"] for u in map(json.loads, r.output.splitlines())}
    assert roles == {"boss": "admin", "clerk": "official", "auditor": "viewer"}
    r = runner.invoke(main, ["users", "list", *data])
    assert "ROLE" in r.output and "viewer" in r.output
    r = runner.invoke(main, ["users", "set-role", "auditor", "official", *data])
    assert r.exit_code == 0 and "auditor is now an official" in r.output
    r = runner.invoke(main, ["users", "list", "--json", *data])
    roles = {u["name"]: u["role"] for u in map(json.loads, r.output.splitlines())}
    assert roles["auditor"] == "official"
    for command in (["disable", "clerk"], ["enable", "clerk"], ["unlock", "clerk"]):
        assert runner.invoke(main, ["users", *command, *data]).exit_code == 0
    # every change made on the command line is audited like one made in the console
    from voicecheck.service.store import Store

    rows = Store(f"sqlite:///{tmp_path / 'data' / 'voicecheck.db'}").audit_rows()
    cli = [(r["outcome"], r["target_user"], r["detail"]) for r in rows if r["method"] == "CLI"]
    assert cli == [
        ("user_created", "boss", "role admin"),
        ("user_created", "clerk", "role official"),
        ("user_created", "auditor", "role viewer"),
        ("user_role_changed", "auditor", "role viewer -> official"),
        ("user_disabled", "clerk", None),
        ("user_enabled", "clerk", None),
        ("user_unlocked", "clerk", None),
    ]
    r = runner.invoke(main, ["audit", "verify", *data])
    assert r.exit_code == 0, r.output
