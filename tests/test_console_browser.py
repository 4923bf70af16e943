"""The web console end to end: Debian's Chromium, driven by Playwright, against gunicorn.

An official signs in, drops or picks G.711 calls, watches each upload's progress, opens
the result, sees the verdict and the timeline, plays nothing but finds the player, and
downloads the evidence report. The server is ``voicecheck serve`` on the shipped model.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_service_server import VOICECHECK, Server, _env

CHROMIUM = os.environ.get("VOICECHECK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "ballot box 2026 secure"
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.slow


def _browser_or_skip():
    """Playwright's sync API and Chromium; missing ones fail under CI, skip elsewhere."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
        sync_playwright = None
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("console") / "data"
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
    path = tmp_path_factory.mktemp("calls") / "robocall ward 3.wav"
    path.write_bytes(g711_call)
    return path


def sign_in(page) -> None:
    page.goto("/")
    assert page.url.endswith("/sign-in")
    page.get_by_label("User name").fill("clerk")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/upload")


def test_sign_in_upload_read_the_result_and_download_the_report(page, call_file):
    from pypdf import PdfReader

    sign_in(page)
    assert page.get_by_role("heading", name="Check a recorded call").is_visible()
    page.set_input_files("#file", str(call_file))
    item = page.locator("#queue .item").first
    item.get_by_role("link", name="Open the result").wait_for()
    assert re.search(r"score \d\.\d\d", item.inner_text())
    item.get_by_role("link", name="Open the result").click()
    page.wait_for_url(re.compile(r"/cases/an_[0-9a-f]+$"))

    heading = page.locator("#verdict-title")
    assert re.search(r"Likely cloned|Likely human|Inconclusive", heading.inner_text())
    assert re.fullmatch(r"\d\.\d\d", page.locator("#score").inner_text())
    assert "in our tests" in page.locator("#meaning").inner_text().lower()
    timeline = page.locator("#timeline")
    timeline.wait_for()
    page.wait_for_function("document.getElementById('timeline').complete")
    width = page.evaluate("document.getElementById('timeline').naturalWidth")
    assert width >= 600  # the picture arrived and decoded
    assert page.locator("audio").count() == 1
    duration = page.evaluate(
        """() => new Promise((ok) => { const a = document.querySelector('audio');
        if (a.readyState >= 1) ok(a.duration); else a.onloadedmetadata = () => ok(a.duration); })"""
    )
    assert abs(duration - 10.0) < 0.2
    seek = page.locator("button.seek").nth(1)  # the second part of the call
    start = float(seek.get_attribute("data-seek"))
    seek.click()
    position = page.evaluate("document.getElementById('player').currentTime")
    assert start - 0.05 <= position <= start + 1.0
    sha = page.locator("#sha256").inner_text()
    assert re.fullmatch(r"[0-9a-f]{64}", sha)

    with page.expect_download() as info:
        page.locator("#download-pdf").click()
    download = info.value
    assert download.suggested_filename.endswith(".pdf")
    data = Path(download.path()).read_bytes()
    assert data.startswith(b"%PDF")
    text = re.sub(r"\s+", "", "".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages))
    assert sha in text
    assert page.script_errors == []


def test_drop_several_files_and_see_each_ones_outcome(page, g711_call):
    sign_in(page)
    payload = base64.b64encode(g711_call).decode()
    page.evaluate(
        """(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'first call.wav', {type: 'audio/wav'}));
        dt.items.add(new File([bytes], 'second call.wav', {type: 'audio/wav'}));
        dt.items.add(new File(['not audio at all, just text'], 'notes.txt', {type: 'text/plain'}));
        const zone = document.getElementById('drop');
        zone.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""",
        payload,
    )
    items = page.locator("#queue .item")
    from playwright.sync_api import expect

    expect(page.locator("#queue .item.done, #queue .item.failed")).to_have_count(3)
    texts = items.all_inner_texts()
    assert "first call.wav" in texts[0] and "Open the result" in texts[0]
    assert "second call.wav" in texts[1] and "Open the result" in texts[1]
    assert "notes.txt" in texts[2] and "Not checked:" in texts[2]
    page.goto("/cases?q=call.wav")
    assert re.search(r"\d+ cases? found", page.locator("#case-count").inner_text())
    assert page.get_by_role("link", name="first call.wav").count() == 1


def test_each_file_shows_its_upload_progress(page, g711_call, tmp_path):
    """On a slow uplink the page shows each file's progress as it goes, then its outcome."""
    import numpy as np
    import soundfile as sf

    y, sr = sf.read(io.BytesIO(g711_call), dtype="float32")
    longer = tmp_path / "long call.wav"
    sf.write(longer, np.tile(y, 3), sr, format="WAV", subtype="ULAW")  # 30 s, 240 kB
    sign_in(page)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 60_000},
    )
    page.evaluate(
        """() => { window.seenProgress = [];
        setInterval(() => document.querySelectorAll('#queue progress[value]').forEach(
            (p) => window.seenProgress.push(Number(p.value))), 50); }"""
    )
    page.set_input_files("#file", str(longer))
    page.get_by_role("link", name="Open the result").wait_for()
    seen = page.evaluate("window.seenProgress")
    assert any(0 < v < 100 for v in seen), seen[:20]
    assert seen == sorted(seen)  # it only moves forward


def test_keyboard_only_sign_in_and_a_phone_sized_screen(browser, server, call_file):
    context = browser.new_context(
        base_url=server.base, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto("/sign-in")
        page.keyboard.press("Tab")  # the skip link comes first
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.locator("#name").focus()
        page.keyboard.type("clerk")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url("**/upload")
        page.set_input_files("#file", str(call_file))
        page.get_by_role("link", name="Open the result").click()
        page.wait_for_url(re.compile(r"/cases/an_"))
        page.locator("#timeline").wait_for()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the result page is {overflow}px wider than a phone screen"
        for field in page.locator("input:not([type=hidden]), textarea, select").all():
            ident = field.get_attribute("id")
            assert ident and page.locator(f"label[for='{ident}']").count() == 1, ident
    finally:
        context.close()


def test_a_note_then_sign_out(page, call_file):
    sign_in(page)
    page.set_input_files("#file", str(call_file))
    page.get_by_role("link", name="Open the result").click()
    page.wait_for_url(re.compile(r"/cases/an_"))
    page.get_by_label("Add a note").fill("Forwarded to the county clerk at 10:40.")
    page.get_by_role("button", name="Save the note").click()
    page.wait_for_url(re.compile(r"#notes$"))
    assert "Forwarded to the county clerk" in page.locator("#notes").inner_text()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/sign-in"))
    assert "You have signed out." in page.content()
    page.goto("/cases")
    assert "/sign-in" in page.url
