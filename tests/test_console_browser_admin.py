"""Console roles end to end in Chromium: an admin adds a user, a viewer only reads.

The server is ``voicecheck serve`` on the shipped model, with users made by
``voicecheck users create --role``; the browser, fixtures and skips are those of
test_console_browser.py.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import test_console_browser as base
from test_service_server import VOICECHECK, Server, _env

PASSWORD = base.PASSWORD
NEW_PASSWORD = "polling place 7 key"

# the browser, page and call file of the console's own browser tests
browser = base.browser
page = base.page
call_file = base.call_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("console-admin") / "data"
    data.mkdir()
    for name, role in (("boss", "admin"), ("clerk", "official"), ("auditor", "viewer")):
        proc = subprocess.run(
            [*VOICECHECK, "users", "create", name, "--role", role, "--password-stdin"],
            input=PASSWORD + "\n",
            env=_env(data),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
    srv = Server(data).start()
    yield srv
    srv.stop()


def sign_in_as(page, name: str, password: str = PASSWORD, *, lands_on: str = "**/upload"):
    page.goto("/sign-in")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lands_on)


def test_an_admin_adds_a_user_who_sets_a_password_and_signs_in(page, browser, server):
    sign_in_as(page, "boss")
    page.get_by_role("link", name="Users").click()
    page.wait_for_url("**/admin/users")
    page.get_by_label("User name").fill("poll.worker")
    page.get_by_label("Role", exact=True).select_option("official")
    page.get_by_role("button", name="Add the user").click()
    link = page.get_by_label("One-time set-password link").input_value()
    assert "/set-password?token=" in link
    assert "shown only now" in page.content()

    context = browser.new_context(base_url=server.base)
    context.set_default_timeout(base.TIMEOUT_MS)
    newcomer = context.new_page()
    try:
        newcomer.goto(link)
        assert "poll.worker" in newcomer.content()
        newcomer.get_by_label("New password").fill(NEW_PASSWORD)
        newcomer.get_by_label("Repeat the password").fill(NEW_PASSWORD)
        newcomer.get_by_role("button", name="Set the password").click()
        newcomer.wait_for_url(re.compile(r"/sign-in\?password_set=1"))
        assert "Your password is set" in newcomer.content()
        sign_in_as(newcomer, "poll.worker", NEW_PASSWORD)
        assert "Signed in as" in newcomer.content()
        assert newcomer.locator("#file").count() == 1
        # the link worked once
        newcomer.goto(link)
        assert "This link is not valid" in newcomer.content()
    finally:
        context.close()

    page.goto("/admin/users")
    row = page.locator("#users tr", has_text="poll.worker")
    assert "active" in row.inner_text()
    assert not page.script_errors


def test_a_viewer_sees_a_case_but_no_upload_form(page, browser, server, call_file):
    sign_in_as(page, "clerk")
    page.set_input_files("#file", str(call_file))
    page.get_by_role("link", name="Open the result").click()
    page.wait_for_url(re.compile(r"/cases/an_"))
    case_url = page.url
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/sign-in"))

    sign_in_as(page, "auditor", lands_on="**/cases")
    assert page.get_by_role("link", name="Check a call").count() == 0
    assert page.get_by_role("link", name="Users").count() == 0
    page.get_by_role("link", name="robocall ward 3.wav").first.click()
    page.wait_for_url(re.compile(r"/cases/an_"))
    assert page.locator("h1").count() == 1
    assert "robocall ward 3.wav" in page.content()
    assert page.get_by_label("Add a note").count() == 0
    page.goto("/upload")
    assert page.url.endswith("/cases")
    assert page.locator("#file").count() == 0
    page.goto(case_url)  # reports are for reading: a viewer downloads them
    with page.expect_download() as download:
        page.locator("#download-pdf").click()
    assert download.value.suggested_filename.endswith(".pdf")
    assert not page.script_errors
