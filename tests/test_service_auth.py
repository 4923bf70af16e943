"""API keys, scopes, rate limits and settings of the service."""

from __future__ import annotations

import pytest

from voicecheck.service import create_app
from voicecheck.service.auth import (
    AuthError,
    KeyRequestError,
    check_key,
    check_rate,
    create_key,
    hash_secret,
    parse_rate,
)
from voicecheck.service.settings import SettingsError, load_settings
from voicecheck.service.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'keys.db'}")
    yield s
    s.dispose()


def test_key_is_stored_only_as_a_hash(store):
    row, key = create_key(store, "carrier-a")
    assert key.startswith(f"vck_{row['id']}_")
    secret = key.split("_", 2)[2]
    stored = store.get_key(row["id"])
    assert stored["secret_sha256"] == hash_secret(secret)
    assert secret not in str(stored)


def test_check_key_accepts_the_key_and_refuses_near_misses(store):
    row, key = create_key(store, "carrier-a", scopes=["analyze"])
    found = check_key(store, f"Bearer {key}")
    assert found.id == row["id"] and found.scopes == {"analyze"}
    assert check_key(store, f"bearer  {key} ").id == row["id"]
    last = key[-1]
    wrong = key[:-1] + ("A" if last != "A" else "B")
    for header in (None, "", key, f"Basic {key}", "Bearer", f"Bearer {wrong}", "Bearer vck_x_y"):
        with pytest.raises(AuthError):
            check_key(store, header)


def test_revoked_key_is_refused(store):
    row, key = create_key(store, "carrier-a")
    assert store.revoke_key(row["id"], 1.0)
    assert not store.revoke_key(row["id"], 2.0)  # already revoked
    with pytest.raises(AuthError, match="not valid"):
        check_key(store, f"Bearer {key}")


def test_key_requests_are_checked(store):
    with pytest.raises(KeyRequestError, match="unknown scope"):
        create_key(store, "x", scopes=["analyse"])
    with pytest.raises(KeyRequestError, match="name"):
        create_key(store, "  ")
    with pytest.raises(KeyRequestError, match="not understood"):
        create_key(store, "x", rate_limit="lots")


def test_rate_strings():
    assert parse_rate("10/second").period_s == 1
    assert parse_rate("5 / hour").count == 5
    assert str(parse_rate("120/min")) == "120/minute"
    assert parse_rate("") is None and parse_rate("0/minute") is None


def test_scopes_decide_what_a_key_may_do(service_app, client, g711_call):
    store = service_app.extensions["voicecheck"].store
    reader = create_key(store, "reader", scopes=["read"])[1]
    r = client.post(
        "/v1/analyze",
        data=g711_call,
        headers={"Authorization": f"Bearer {reader}", "Content-Type": "audio/wav"},
    )
    assert r.status_code == 403 and r.json["code"] == "forbidden"
    assert "'analyze'" in r.json["detail"]
    writer = create_key(store, "writer", scopes=["analyze"])[1]
    made = client.post(
        "/v1/analyze",
        data=g711_call,
        headers={"Authorization": f"Bearer {writer}", "Content-Type": "audio/wav"},
    )
    assert made.status_code == 200
    r = client.get(made.json["url"], headers={"Authorization": f"Bearer {writer}"})
    assert r.status_code == 403


def test_missing_or_revoked_key_is_401_with_a_challenge(service_app, client, g711_call):
    store = service_app.extensions["voicecheck"].store
    row, key = create_key(store, "gone")
    store.revoke_key(row["id"], 1.0)
    for headers in ({}, {"Authorization": f"Bearer {key}"}):
        r = client.post(
            "/v1/analyze", data=g711_call, headers={**headers, "Content-Type": "audio/wav"}
        )
        assert r.status_code == 401 and r.mimetype == "application/problem+json"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_rate_limit_answers_429_with_retry_after(tmp_path, small_model, g711_call):
    app = create_app(
        {
            "data_dir": str(tmp_path),
            "detector": small_model,
            "job_runner": False,
            "rate_limit": "2/minute",
            "log_level": "WARNING",
        }
    )
    store = app.extensions["voicecheck"].store
    key = create_key(store, "small")[1]
    roomy = create_key(store, "roomy", rate_limit="100/minute")[1]
    c = app.test_client()

    def post(k):
        return c.post(
            "/v1/analyze",
            data=g711_call,
            headers={"Authorization": f"Bearer {k}", "Content-Type": "audio/wav"},
        )

    first, second = post(key), post(key)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["RateLimit-Limit"] == "2" and first.headers["RateLimit-Remaining"] == "1"
    assert second.headers["RateLimit-Remaining"] == "0"
    assert first.headers["RateLimit-Policy"] == "2;w=60"
    limited = post(key)
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert limited.status_code == 429 and limited.json["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json["retry_after_s"] == int(limited.headers["Retry-After"])
    assert post(key).status_code == 429  # refusals do not extend the window...
    assert post(roomy).status_code == 200  # ...and other keys are not affected
    rows = list(store.audit_rows())
    assert sum(1 for r in rows if r["status"] == 429) == 2


def test_rate_window_slides(store):
    from voicecheck.service.auth import ApiKey, RateLimitedError

    key = ApiKey(id="k1", name="k", scopes=frozenset({"analyze"}), rate_limit="2/minute")
    rows = [
        {
            "time": t,
            "key_id": "k1",
            "method": "POST",
            "path": "/v1/analyze",
            "status": 200,
            "outcome": "ok",
        }
        for t in (1000.0, 1030.0)
    ]
    store.write_audit(rows)
    with pytest.raises(RateLimitedError) as err:
        check_rate(store, key, "0", now=1040.0)
    assert err.value.retry_after_s == 20  # the row at 1000 leaves the window at 1060
    check_rate(store, key, "0", now=1061.0)


# --- settings ------------------------------------------------------------------------


def test_settings_come_from_file_then_environment_then_overrides(tmp_path):
    (tmp_path / "voicecheck.toml").write_text('max_upload_mb = 10\nrate_limit = "5/second"\n')
    env = {
        "VOICECHECK_DATA_DIR": str(tmp_path),
        "VOICECHECK_MAX_UPLOAD_MB": "20",
        "VOICECHECK_RETAIN_AUDIO": "yes",
        "VOICECHECK_CALLBACK_ALLOWED_HOSTS": "a.example, b",
    }
    s = load_settings(environ=env)
    assert s.max_upload_mb == 20 and s.rate_limit == "5/second" and s.retain_audio is True
    assert s.callback_allowed_hosts == ["a.example", "b"]
    assert s.database == f"sqlite:///{tmp_path.resolve() / 'voicecheck.db'}"
    assert load_settings({"max_upload_mb": 30}, environ=env).max_upload_mb == 30


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VOICECHECK_MAX_UPLOAD_MB": "lots"}, "UPLOAD_MB is 'lots'; expected a number"),
        ({"VOICECHECK_RETAIN_AUDIO": "maybe"}, "expected true or false"),
        ({"VOICECHECK_MAX_SYNC_DURATION_S": "0"}, "expected more than 0"),
        ({"VOICECHECK_LOG_FORMAT": "xml"}, "expected json or text"),
        ({"VOICECHECK_CONFIG": "/nonexistent/v.toml"}, "does not exist"),
    ],
)
def test_bad_settings_are_named(tmp_path, env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(environ={"VOICECHECK_DATA_DIR": str(tmp_path), **env})


def test_unknown_setting_in_the_instance_file_is_named(tmp_path):
    (tmp_path / "voicecheck.toml").write_text("max_uplod_mb = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'max_uplod_mb'"):
        load_settings(environ={"VOICECHECK_DATA_DIR": str(tmp_path)})


def test_public_settings_hide_secrets():
    s = load_settings(
        {"database_url": "postgresql+psycopg://vc:hunter2@db/vc", "callback_secret": "s3"},
        environ={},
    )
    shown = str(s.public())
    assert "hunter2" not in shown and "s3" not in shown and "vc:***@db" in shown


def test_an_expired_key_is_refused(store):
    import time

    row, key = create_key(store, "temp", expires_at=time.time() + 3600)
    assert check_key(store, f"Bearer {key}").id == row["id"]
    row, key = create_key(store, "old", expires_at=time.time() - 1)
    with pytest.raises(AuthError, match="has expired"):
        check_key(store, f"Bearer {key}")


def test_a_store_from_an_earlier_version_gains_the_new_columns(tmp_path):
    import sqlalchemy as sa

    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # the key table as the first release wrote it
        conn.execute(
            sa.text(
                "CREATE TABLE api_keys (id VARCHAR(32) PRIMARY KEY, name VARCHAR(200) NOT NULL, "
                "secret_sha256 VARCHAR(64) NOT NULL, scopes VARCHAR(200) NOT NULL, "
                "rate_limit VARCHAR(40), created_at FLOAT NOT NULL, revoked_at FLOAT)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO api_keys VALUES ('abc', 'kept', 'x', 'analyze', NULL, 1.0, NULL)")
        )
    engine.dispose()
    store = Store(f"sqlite:///{path}")
    assert store.get_key("abc")["expires_at"] is None  # old rows stay valid
    row, key = create_key(store, "new", expires_at=2e9)
    assert check_key(store, f"Bearer {key}").name == "new"
    store.dispose()
