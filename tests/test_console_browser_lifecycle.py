"""Deleting a case in the console end to end: Debian's Chromium, driven by Playwright.

An official uploads a call, opens its result, asks to delete it, confirms, and lands on
the page that says the case was deleted; the files are gone from the data folder.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from test_console_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    TIMEOUT_MS,
    _browser_or_skip,
    sign_in,
)
from test_service_server import VOICECHECK, Server, _env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("lifecycle") / "data"
    data.mkdir()
    proc = subprocess.run(
        [*VOICECHECK, "users", "create", "clerk", "--password-stdin"],
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


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server.base, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.script_errors = errors
    yield pg
    context.close()


@pytest.fixture(scope="module")
def call_file(tmp_path_factory, g711_call) -> Path:
    path = tmp_path_factory.mktemp("calls") / "robocall to delete.wav"
    path.write_bytes(g711_call)
    return path


def test_delete_a_case_after_confirming_it(page, server, call_file):
    sign_in(page)
    page.set_input_files("#file", str(call_file))
    page.get_by_role("link", name="Open the result").click()
    page.wait_for_url(re.compile(r"/cases/an_[0-9a-f]+$"))
    case_url = page.url
    page.locator("#timeline").wait_for()
    page.wait_for_function("document.getElementById('timeline').complete")
    kept = [p for p in (server.data_dir / "audio").rglob("*") if p.is_file()]
    assert kept  # the call and its timeline

    page.get_by_role("link", name="Delete this case…").click()
    page.wait_for_url(re.compile(r"/cases/an_[0-9a-f]+/delete$"))
    assert page.get_by_role("heading", name="Delete this case?").is_visible()
    # changing one's mind goes back to the case, which is still there
    page.get_by_role("link", name="Keep the case").click()
    page.wait_for_url(case_url)
    assert page.locator("#verdict-title").is_visible()

    page.get_by_role("link", name="Delete this case…").click()
    page.get_by_role("button", name="Delete the case permanently").click()
    page.wait_for_url(case_url)
    assert page.get_by_role("heading", name="This case was deleted").is_visible()
    assert "by clerk" in page.locator("#deleted-note").inner_text()
    assert "robocall to delete.wav" not in page.content()
    assert not [p for p in (server.data_dir / "audio").rglob("*") if p.is_file()]
    assert page.script_errors == []

    # the report is gone too: a page says so (the browser logs the 410 itself)
    response = page.goto(case_url + "/report.pdf")
    assert response.status == 410
    assert page.get_by_role("heading", name="Case deleted").is_visible()


def test_export_a_case_as_one_zip_from_its_page(page, server, call_file):
    import hashlib
    import json
    import zipfile

    sign_in(page)
    page.set_input_files("#file", str(call_file))
    page.get_by_role("link", name="Open the result").click()
    page.wait_for_url(re.compile(r"/cases/an_[0-9a-f]+$"))
    with page.expect_download() as download:
        page.locator("#export-zip").click()
    path = download.value.path()
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        manifest = json.loads(z.read("manifest.json"))
        parts = {name: z.read(name) for name in names if name != "manifest.json"}
    assert names[:3] == ["manifest.json", "report.json", "report.pdf"]
    assert f"original/{call_file.name}" in names
    assert parts[f"original/{call_file.name}"] == call_file.read_bytes()
    listed = {f["name"]: f["sha256"] for f in manifest["files"]}
    assert listed == {name: hashlib.sha256(data).hexdigest() for name, data in parts.items()}
    assert page.script_errors == []
