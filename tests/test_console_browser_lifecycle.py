"""Deleting and exporting a case in the console end to end: Debian's Chromium, Playwright.

An official uploads a call, opens its result, asks to delete it, confirms, and lands on
the page that says the case was deleted; the files are gone from the data folder. Another
case is exported from its page as one ZIP whose manifest holds the hash of every part.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import test_console_browser as base
from test_console_browser import sign_in

# the server (one official, "clerk"), browser and page of the console's own browser tests
server = base.server
browser = base.browser
page = base.page

pytestmark = pytest.mark.slow


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
