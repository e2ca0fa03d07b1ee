"""The studio in a real browser: JupyterLab on loopback, lecture 07 run in headless Chromium.

One test, marker ``browser`` (about a minute on 2 CPU cores). It starts ``jupyter lab`` on
127.0.0.1 (a free port, a random token, a temporary root holding a copy of
``notebooks/07_studio.ipynb`` and temporary Jupyter config/runtime/settings folders), opens the
lecture in the system Chromium through Selenium and ``/usr/bin/chromedriver`` (browsers cannot
be downloaded here), runs every cell with JupyterLab's own ``notebook:run-all-cells`` command,
fails on any error output, then uses the studio like a student:

* the **A/B compare** tab: every choice names its result's prompt, and the pair on show has
  its descriptor table;
* a history row's **play**: the result tab shows that entry with its player started;
* the **continuation** tab: the source is the latest result, and Generate with the tab's
  defaults makes a new result;
* the **text** tab and **Generate**: the new result's ``<audio>`` element;
* **Cancel from a cell**: a new cell runs ``studio.generate(duration=30.0)``, Cancel is clicked
  about 2 s in, and that run ends cancelled, with nothing kept.

The studio is saved as a screenshot in the test's temporary folder (before the cancel, so it
shows a result); ``MUSICGEN_UPDATE_SCREENSHOT=1`` (``make screenshot``) also writes
``docs/images/studio.png``, the picture the docs show.

Without Chromium, chromedriver, selenium or jupyterlab the test skips and says what is
missing; with ``MUSICGEN_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs them) it fails
instead, so CI cannot skip it silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tooling import missing_tool

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
LECTURE = ROOT / "notebooks" / "07_studio.ipynb"
SCREENSHOT = ROOT / "docs" / "images" / "studio.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
RUN_ALL_TIMEOUT, GENERATE_TIMEOUT = 240, 120                      # seconds; generous on 2 cores


def missing_tools() -> list[str]:
    missing = [f"{name} ({path})" for name, path in (("chromium", CHROMIUM),
                                                     ("chromedriver", CHROMEDRIVER))
               if not os.access(path, os.X_OK)]
    return missing + [m for m in ("selenium", "jupyterlab", "ipywidgets")
                      if importlib.util.find_spec(m) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on loopback: ``(base_url, token, root)``; shut down afterwards."""
    missing = missing_tools()
    if missing:
        reason = (f"browser test needs {', '.join(missing)}: apt-get install chromium "
                  "chromium-driver; pip install -e '.[dev]'")
        missing_tool(reason, "MUSICGEN_REQUIRE_BROWSER")
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    shutil.copy(LECTURE, root / LECTURE.name)
    port, token = free_port(), os.urandom(16).hex()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "IPYTHONDIR": str(tmp / "ipython"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    env.pop("MPLBACKEND", None)                          # the kernel draws inline, as usual
    log = open(tmp / "jupyter.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp / "jupyter.log").read_text(
                        errors="replace")[-4000:], pytrace=False)
                time.sleep(0.5)
        yield base, token, root
    finally:
        try:      # a clean shutdown also stops the kernel
            urllib.request.urlopen(urllib.request.Request(
                f"{base}/api/shutdown?token={token}", method="POST"), timeout=10)
            server.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(lab, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1300,2400", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(RUN_ALL_TIMEOUT)
    yield driver
    driver.quit()


def wait_for(what: str, poll, timeout: float, interval: float = 0.5):
    """Call ``poll()`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = poll()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {value!r})",
                pytrace=False)


# JupyterLab's own objects (exposed by --LabApp.expose_app_in_browser): the open notebook's
# code cells, how many have run, the kernel status and any error output.
NOTEBOOK_STATE = """
const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!panel || !panel.content || !panel.sessionContext) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const cells = panel.content.widgets.filter(c => c.model.type === 'code');
const errors = [];
for (const c of cells) for (const o of c.model.outputs.toJSON())
  if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
return {cells: cells.length, run: cells.filter(c => c.model.executionCount !== null).length,
        kernel: kernel ? kernel.status : 'none', errors: errors};
"""


# Run a new cell at the end of the open notebook (as a student types one), without waiting.
RUN_NEW_CELL = """
const panel = window.jupyterapp.shell.currentWidget, notebook = panel.content;
notebook.activeCellIndex = notebook.widgets.length - 1;
window.jupyterapp.commands.execute('notebook:insert-cell-below').then(() => {
  notebook.activeCell.model.sharedModel.setSource(arguments[0]);
  return window.jupyterapp.commands.execute('notebook:run-cell');
});
"""
# The text the last cell printed, and whether it has run (its execution count is set).
LAST_CELL = """
const cells = window.jupyterapp.shell.currentWidget.content.widgets;
const cell = cells[cells.length - 1];
const text = cell.model.outputs.toJSON().map(o => o.text || '').join('');
return {text: text, done: cell.model.executionCount !== null};
"""
SELECTED = ("const s = arguments[0].querySelector('select');"
            "return s.options[s.selectedIndex].textContent.replace(/\\u00a0/g, ' ');")
OPTIONS = ("return [...arguments[0].querySelectorAll('option')]"
           ".map(o => o.textContent.replace(/\\u00a0/g, ' '));")   # ipywidgets: no-break spaces


def test_lecture_07_runs_and_the_studio_generates_in_a_browser(lab, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, token, _ = lab
    browser.get(f"{base}/lab/tree/{LECTURE.name}?token={token}&reset")
    wait_for("the notebook and an idle kernel", lambda: (
        (s := browser.execute_script(NOTEBOOK_STATE)) and s["kernel"] == "idle" and s), 120)
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def finished():
        state = browser.execute_script(NOTEBOOK_STATE)
        if state and state["errors"]:
            pytest.fail(f"a lecture cell failed in JupyterLab: {state['errors']}", pytrace=False)
        return state["run"] == state["cells"] and state["kernel"] == "idle" and state

    wait_for("every cell to run", finished, RUN_ALL_TIMEOUT, interval=1)

    # The studio rendered as widgets (not its text fallback), with its results so far.
    studio = wait_for("the studio widget", lambda: browser.find_elements(
        By.CSS_SELECTOR, ".mg-studio"), 60)[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", studio)
    status = studio.find_element(By.CSS_SELECTOR, ".mg-studio-status")
    before = int(wait_for("a '#n done' status", lambda: re.search(
        r"#(\d+) done", status.text), 30).group(1))
    assert before == 11, f"the lecture should leave 11 results (test_notebooks): {status.text}"

    def tab(title):
        return next(t for t in studio.find_elements(By.CSS_SELECTOR, ".lm-TabBar-tab")
                    if t.text.strip() == title)

    def result_text():
        return studio.find_element(By.CSS_SELECTOR, ".mg-studio-result").text

    # A/B: every choice names its result's prompt (#1-#4 looked identical), with descriptors.
    tab("A/B compare").click()
    for side in ("a", "b"):
        options = browser.execute_script(OPTIONS, studio.find_element(
            By.CSS_SELECTOR, f".mg-studio-ab-{side}"))
        assert [o.split(" ", 1)[0] for o in options] == [f"#{i}" for i in range(1, before + 1)]
        assert all(" 'slow piano melody in D…', " in o for o in options), options
    compare = studio.find_element(By.CSS_SELECTOR, ".mg-studio-compare").text
    assert "A #2 'slow piano melody in D…'" in compare and "spectral centroid (Hz)" in compare
    assert len(studio.find_elements(By.CSS_SELECTOR, ".mg-studio-compare img")) == 4

    # History: play #1 shows it in the result tab with its player started.
    tab("history").click()
    studio.find_element(By.CSS_SELECTOR, ".mg-studio-history .widget-hbox button").click()
    wait_for("#1 in the result tab", lambda: result_text().startswith("#1 "), 30)
    player = studio.find_element(By.CSS_SELECTOR, ".mg-studio-result audio")
    assert player.get_property("autoplay"), "the history's play did not start the player"

    # Continuation with the tab's defaults: the source is the latest result, and they run.
    tab("continuation").click()
    source = studio.find_element(By.CSS_SELECTOR, ".mg-studio-source")
    assert browser.execute_script(SELECTED, source) == f"#{before} result"
    seconds = studio.find_element(By.CSS_SELECTOR, ".mg-studio-prompt-seconds .widget-readout")
    assert seconds.text == "1.00"                   # below the 2.0 s duration: valid
    button = studio.find_element(By.CSS_SELECTOR, ".mg-studio-generate")
    button.click()
    wait_for(f"result #{before + 1}", lambda: re.search(
        rf"#{before + 1} done|not generated|needs|error", status.text), GENERATE_TIMEOUT)
    assert f"#{before + 1} done" in status.text, status.text
    assert browser.execute_script(SELECTED, source) == f"#{before + 1} result"   # follows

    # Like a student: the text tab, then Generate; the new result brings its <audio> player.
    tab("text").click()
    assert button.is_enabled()
    button.click()
    wait_for(f"result #{before + 2}", lambda: f"#{before + 2} done" in status.text,
             GENERATE_TIMEOUT)
    players = studio.find_elements(By.CSS_SELECTOR, ".mg-studio-result audio")
    assert len(players) == 1 and players[0].get_attribute("src"), "no <audio> with a source"
    summary = result_text()
    assert summary.startswith(f"#{before + 2}") and "16000 Hz" in summary, summary   # edu-tiny
    assert button.is_enabled()                      # enabled again once the run ended
    history = studio.find_elements(By.CSS_SELECTOR, ".mg-studio-history .widget-hbox")
    assert len(history) == before + 2

    # The screenshot the docs show.
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", studio)
    time.sleep(1)                                   # let the images paint
    shot = tmp_path / "studio.png"
    assert studio.screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("MUSICGEN_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)

    # Cancel from a cell: the kernel is busy with the cell, and the click still stops the run.
    browser.execute_script(RUN_NEW_CELL,
                           "print(studio.generate(duration=30.0), '|', studio.message)")
    wait_for("the 30 s run to start", lambda: "generating 30.0 s" in status.text, 60)
    cancel = studio.find_element(By.CSS_SELECTOR, ".mg-studio-cancel")
    time.sleep(2)                                   # a student listens, then changes their mind
    assert cancel.is_enabled() and browser.execute_script(NOTEBOOK_STATE)["kernel"] == "busy"
    cancel.click()
    wait_for("the run to end", lambda: re.search(r"cancelled at step|#\d+ done", status.text),
             GENERATE_TIMEOUT)
    assert "cancelled at step" in status.text, f"Cancel was ignored: {status.text}"
    cell = wait_for("the cell to finish", lambda: (
        (c := browser.execute_script(LAST_CELL))["done"] and c), 60)
    assert cell["text"].startswith("None | cancelled at step"), cell["text"]
    assert len(studio.find_elements(By.CSS_SELECTOR, ".mg-studio-history .widget-hbox")) == (
        before + 2)                                 # nothing kept
    print(json.dumps({"screenshot": str(shot), "results": before + 2}))
