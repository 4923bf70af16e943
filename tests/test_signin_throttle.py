"""The console's sign-in throttle per client address, on top of the per-account lock-out."""

from __future__ import annotations

import re
import time

import pytest
from conftest import make_service_app

from voicecheck.service.accounts import create_user
from voicecheck.service.settings import SettingsError, load_settings

PASSWORD = "correct horse battery"
ATTACKER = "203.0.113.7"
OFFICE = "198.51.100.20"
PROXY = "10.0.0.2"


@pytest.fixture
def make_app(tmp_path, small_model):
    """Applications over one data folder (each like a gunicorn worker on the same store)."""
    apps = []

    def build(**settings):
        app = make_service_app(tmp_path, small_model, **settings)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["voicecheck"].store.dispose()


def client_at(app, addr: str):
    """A test client whose requests come from ``addr``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = addr
    return client


def sign_in(client, name: str, password: str = PASSWORD, headers: dict | None = None):
    page = client.get("/sign-in", headers=headers)
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post(
        "/sign-in",
        data={"name": name, "password": password, "csrf_token": token},
        headers=headers,
    )


def fail_many(client, n: int, headers: dict | None = None) -> None:
    for i in range(n):
        r = sign_in(client, f"guess{i}", "not the password", headers=headers)
        assert r.status_code == 401, r.status_code


def test_defaults_are_twenty_failures_in_ten_minutes_and_no_trusted_proxy(tmp_path):
    settings = load_settings({"data_dir": str(tmp_path)}, environ={})
    assert settings.sign_in_address_max_failures == 20
    assert settings.sign_in_address_window_minutes == 10
    assert settings.trusted_proxies == 0
    with pytest.raises(SettingsError, match="sign_in_address_window_minutes"):
        load_settings({"data_dir": str(tmp_path), "sign_in_address_window_minutes": 0}, environ={})
    with pytest.raises(SettingsError, match="sign_in_address_max_failures"):
        load_settings({"data_dir": str(tmp_path), "sign_in_address_max_failures": -1}, environ={})


def test_many_names_from_one_address_hit_the_limit(make_app):
    app = make_app(sign_in_address_max_failures=6)
    store = app.extensions["voicecheck"].store
    create_user(store, "clerk", PASSWORD)
    attacker = client_at(app, ATTACKER)
    fail_many(attacker, 6)
    r = sign_in(attacker, "guess6", "not the password")
    assert r.status_code == 429
    assert r.mimetype == "text/html"
    assert "Too many failed sign-ins" in r.text
    assert "6 failed sign-ins from your network address in the last 10 minutes" in r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 600
    assert "Please try again in" in r.text
    # the right password from that address is refused too, and no session is opened
    r = sign_in(attacker, "clerk")
    assert r.status_code == 429
    assert attacker.get_cookie("voicecheck_session") is None
    # no account took the blame: the real official's account is not locked
    assert store.get_user(name="clerk")["locked_until"] is None
    outcomes = [row["outcome"] for row in store.audit_rows()]
    assert outcomes.count("sign_in_failed") == 6
    assert outcomes.count("sign_in_throttled") == 2


def test_another_address_still_signs_in_and_does_not_reset_the_count(make_app):
    app = make_app(sign_in_address_max_failures=4)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    attacker = client_at(app, ATTACKER)
    fail_many(attacker, 4)
    assert sign_in(attacker, "clerk").status_code == 429
    office = client_at(app, OFFICE)
    assert sign_in(office, "clerk", "wrong password").status_code == 401  # counted, not blocked
    r = sign_in(office, "clerk")
    assert r.status_code == 303 and r.headers["Location"] == "/upload"
    assert office.get("/upload").status_code == 200
    assert sign_in(attacker, "clerk").status_code == 429


def test_the_count_is_shared_by_every_server_process(make_app):
    first = make_app(sign_in_address_max_failures=4)
    second = make_app(sign_in_address_max_failures=4)  # another worker, same store file
    create_user(first.extensions["voicecheck"].store, "clerk", PASSWORD)
    fail_many(client_at(first, ATTACKER), 2)
    fail_many(client_at(second, ATTACKER), 2)
    assert sign_in(client_at(first, ATTACKER), "clerk").status_code == 429
    assert sign_in(client_at(second, ATTACKER), "clerk").status_code == 429


def test_behind_one_trusted_proxy_the_forwarded_address_is_the_client(make_app):
    app = make_app(sign_in_address_max_failures=3, trusted_proxies=1)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    via_proxy = client_at(app, PROXY)
    # the proxy appends the address it saw; what the client sent before it is not trusted
    attacker = {"X-Forwarded-For": f"192.0.2.99, {ATTACKER}"}
    fail_many(via_proxy, 3, headers=attacker)
    assert sign_in(via_proxy, "clerk", headers=attacker).status_code == 429
    forged = {"X-Forwarded-For": f"192.0.2.1, {ATTACKER}"}
    assert sign_in(via_proxy, "clerk", headers=forged).status_code == 429
    # an official behind the same proxy is another client
    r = sign_in(via_proxy, "clerk", headers={"X-Forwarded-For": OFFICE})
    assert r.status_code == 303
    rows = [r for r in app.extensions["voicecheck"].store.audit_rows()]
    assert {r["client_addr"] for r in rows if r["outcome"] == "sign_in_failed"} == {ATTACKER}


def test_without_trusted_proxies_the_forwarded_header_is_ignored(make_app):
    app = make_app(sign_in_address_max_failures=3)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    client = client_at(app, ATTACKER)
    for i in range(3):  # a new forged address each time does not escape the count
        forged = {"X-Forwarded-For": f"192.0.2.{i + 1}"}
        assert sign_in(client, f"guess{i}", "wrong", headers=forged).status_code == 401
    r = sign_in(client, "clerk", headers={"X-Forwarded-For": OFFICE})
    assert r.status_code == 429
    rows = [r for r in app.extensions["voicecheck"].store.audit_rows()]
    assert {r["client_addr"] for r in rows if r["outcome"] == "sign_in_failed"} == {ATTACKER}


def test_failures_age_out_of_the_window(make_app):
    window_s = 3.0
    app = make_app(sign_in_address_max_failures=2, sign_in_address_window_minutes=window_s / 60)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    attacker = client_at(app, ATTACKER)
    started = time.time()
    fail_many(attacker, 2)
    r = sign_in(attacker, "clerk")
    if time.time() - started >= window_s:
        pytest.skip("this machine took longer than the window to make two sign-ins")
    assert r.status_code == 429
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= window_s
    assert f"try again in {retry} second" in r.text
    time.sleep(retry + 0.2)
    assert sign_in(attacker, "clerk").status_code == 303


def test_zero_failures_turns_the_throttle_off(make_app):
    app = make_app(sign_in_address_max_failures=0)
    create_user(app.extensions["voicecheck"].store, "clerk", PASSWORD)
    attacker = client_at(app, ATTACKER)
    fail_many(attacker, 3)
    assert sign_in(attacker, "clerk").status_code == 303
