"""The demo in a real browser: headless Chromium, driven by Playwright, against ``affectlens demo`` on localhost.

Each test clicks through one tab as a person would and keeps full-page screenshots in ``out/browser-screenshots/``
(the CI artifacts). The browser is the system's Chromium (Debian ``chromium``), never one Playwright downloads:
``AFFECTLENS_CHROMIUM`` names another binary. Without Chromium or Playwright the tests skip, and fail under CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from demo.samples import PORTRAIT
from tests.conftest import REPO, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.weights]

SCREENSHOTS = REPO / "out" / "browser-screenshots"
#: Every wait in a step: models load on first use and CI's CPUs are slow. Waits end on a DOM condition.
STEP_MS = 120_000
START_SECONDS = 180.0
Screenshot = Callable[[str], Path]


def _missing(message: str) -> NoReturn:
    """A browser test's tool is missing: fail under CI (CI=true), skip elsewhere (as ``require_shared`` does)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _chromium() -> str:
    path = os.environ.get("AFFECTLENS_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).is_file():
        _missing("no Chromium: install Debian's `chromium` (or set AFFECTLENS_CHROMIUM) to run the browser tests")
    return path


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    """``affectlens demo`` (the shipped models) on a free localhost port; its temporary files go with it."""
    folder = Path(tempfile.mkdtemp(prefix="affectlens-browser-"))
    log = folder / "demo.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    # Gradio's uploads and outputs and the demo's own videos all land in `folder`, removed at the end.
    env = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
        "TMPDIR": str(folder),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    command = [sys.executable, "-m", "affectlens.cli", "demo", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"`affectlens demo` did not answer on {url} (exit code {server.poll()}):\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # Gradio closes its server on KeyboardInterrupt
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _missing("playwright is not installed: `pip install -e .[dev]` installs it")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        except Error as exc:
            _missing(f"Playwright cannot start {executable}: {exc}")
        yield chromium
        chromium.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page], Screenshot]:
    """``screenshot(page)(step)`` saves ``out/browser-screenshots/<test-name>-<step>.png`` (the full page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = request.node.name
    for stale in SCREENSHOTS.glob(f"{name}-*.png"):
        stale.unlink()

    def bind(page: Page) -> Screenshot:
        def take(step: str) -> Path:
            path = SCREENSHOTS / f"{name}-{step}.png"
            page.screenshot(path=str(path), full_page=True)
            return path

        return take

    return bind


@pytest.fixture
def page(
    request: pytest.FixtureRequest, browser: Browser, demo_url: str, screenshot: Callable[[Page], Screenshot]
) -> Iterator[Page]:
    """A fresh page on the demo; when the test fails, its last state is kept as ``<test-name>-failed.png``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    page.goto(demo_url)
    page.get_by_role("tab", name="Analyze").wait_for()
    failed_before = request.session.testsfailed
    try:
        yield page
    finally:
        if request.session.testsfailed > failed_before:  # the test's own report is counted before teardown
            screenshot(page)("failed")
        context.close()


def test_analyze_tab_reads_the_uploaded_portrait(page: Page, screenshot: Callable[[Page], Screenshot]) -> None:
    from playwright.sync_api import expect

    shoot = screenshot(page)
    page.locator("#image-in input[type=file]").set_input_files(PORTRAIT)
    expect(page.locator("#image-in img")).to_be_visible()
    shoot("uploaded")
    page.locator("#image-btn").click()
    # The portrait smiles: the label's top class and the status line both say so.
    expect(page.locator("#image-label [data-testid=label-output-value]")).to_have_text("happiness", timeout=STEP_MS)
    expect(page.locator("#image-status")).to_contain_text("overall expression: happiness", timeout=STEP_MS)
    shoot("result")


def test_conversation_tab_replies_and_shows_the_tree(page: Page, screenshot: Callable[[Page], Screenshot]) -> None:
    from playwright.sync_api import expect

    shoot = screenshot(page)
    message = "I failed my exam today and I feel awful."
    page.get_by_role("tab", name="Conversation").click()
    box = page.locator("#chat-text textarea")
    box.fill(message)
    shoot("typed")
    page.locator("#chat-btn").click()
    expect(page.locator("#chatbot [data-testid=user]")).to_have_text(message, timeout=STEP_MS)
    expect(page.locator("#chatbot [data-testid=bot]")).to_have_text(re.compile(r"\w{3,}"), timeout=STEP_MS)
    # The tree panel: every stage from the words' attributes to the reply, with the fused emotion.
    tree = page.locator("#chat-tree textarea")
    expect(tree).to_have_value(re.compile(r"^Affective tree"), timeout=STEP_MS)
    for stage in ("attributes", "expressions", "emotion", "cause", "appraisal", "strategy", "reply"):
        assert f"─ {stage} [" in tree.input_value()
    expect(box).to_have_value("")  # the message box is cleared for the next turn
    shoot("reply")


def test_create_tab_generates_emotion_images(page: Page, screenshot: Callable[[Page], Screenshot]) -> None:
    from playwright.sync_api import expect

    shoot = screenshot(page)
    page.get_by_role("tab", name="Create").click()
    count = page.locator("#create-count input[type=number]")
    count.fill("2")
    count.press("Enter")
    expect(page.locator("#create-count input[type=range]")).to_have_value("2")
    shoot("settings")
    page.locator("#create-btn").click()
    # Both faces arrive, each an <img> whose file has loaded (a non-empty src and a decoded picture).
    page.wait_for_function(
        """() => {
            const images = [...document.querySelectorAll('#create-gallery img')];
            return images.length === 2 && images.every((i) => i.getAttribute('src') && i.complete && i.naturalWidth > 0);
        }""",
        timeout=STEP_MS,
    )
    images = page.locator("#create-gallery img")
    assert all(images.nth(k).get_attribute("src") for k in range(2))
    expect(images.first).to_have_attribute("alt", "seed 0")
    expect(page.locator("#create-info")).to_contain_text("seeds")
    shoot("generated")
