"""The web page at ``/`` (serve/web/, serve/routes/web.py) in a real browser, against a real server.

Marker ``browser``. One server on loopback (``start_server``, the offline ``debug`` models, one
``user`` key, no rate limit, 0.5 s stream chunks) and one headless Chromium session (Selenium
and ``/usr/bin/chromedriver``, the flags of test_studio_browser.py plus an autoplay policy that
lets the page play without a click) for the module. The page is used as a student would:
typing the key, a prompt and settings, clicking Generate and Cancel; what the page cannot show
on screen (when the first streamed chunk was scheduled, how many progress events came) it
records as ``data-*`` attributes on ``<body>`` (app.js, its header), which the tests read.

* the page loads with no console error and asks nothing of any other origin;
* the model picker lists ``GET /v1/models``; the settings are one control per field of the
  live ``GenerateRequest`` schema, and a field added to the schema gets a control;
* ``POST /v1/prompts/validate``'s report is shown under the prompt;
* Generate (no stream): progress over SSE, the player plays, the history row downloads a WAV;
* Generate (stream): chunks are scheduled and heard before the job ends, adding up to the clip;
* Cancel of a 30 s clip ends the job ``cancelled``;
* a 422, a 401 and a 429 (a second server with a burst of 1) show the server's own detail.

``MUSICGEN_UPDATE_SCREENSHOT=1`` also writes ``docs/images/web.png``. Without Chromium,
chromedriver or selenium the tests skip and say what is missing; with
``MUSICGEN_REQUIRE_BROWSER=1`` they fail instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tooling import missing_tool

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "web.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
KEY = "web-user-key-1234"
WAIT = 60                                  # seconds for anything the server does; generous
# Chromium logs every 4xx answer to fetch() as a console error; the page's own errors are others
HTTP_ERROR = re.compile(r"Failed to load resource: the server responded with a status of \d+")


def missing_tools() -> list[str]:
    missing = [f"{name} ({path})" for name, path in (("chromium", CHROMIUM),
                                                     ("chromedriver", CHROMEDRIVER))
               if not os.access(path, os.X_OK)]
    return missing + (["selenium"] if importlib.util.find_spec("selenium") is None else [])


def start(tmp: Path, **settings):
    """A real server on a free loopback port, with this module's key and no MUSICGEN_* from
    the environment."""
    import musicgen_edu as mg

    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("MUSICGEN_")
                     and k != "MUSICGEN_CPU_PATHS"]:
            mp.delenv(name)
        return mg.start_server(port=0, storage_dir=tmp, api_host="127.0.0.1",
                               api_keys=f"{KEY}:user:lab1", batch_wait_s=0.0, cors_origins=[],
                               log_level="warning", device="cpu", **settings)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    missing = missing_tools()
    if missing:
        reason = (f"web page test needs {', '.join(missing)}: apt-get install chromium "
                  "chromium-driver; pip install -e '.[dev]'")
        missing_tool(reason, "MUSICGEN_REQUIRE_BROWSER")
    with start(tmp_path_factory.mktemp("web"), default_model="debug",
               models=["debug", "debug-stereo"],
               rate_limit_per_minute=0, stream_chunk_s=0.5) as handle:
        yield handle


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-background-networking", "--window-size=1280,990",
                "--hide-scrollbars", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    # console messages, and every request the page makes (the DevTools network events)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


# --- helpers ---------------------------------------------------------------------------------
def wait_for(what: str, poll, timeout: float = WAIT, interval: float = 0.1):
    """Call ``poll()`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = poll()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {value!r})",
                pytrace=False)


def call(server, method: str, path: str, body: dict | None = None, key: str = KEY):
    """The API without the page: ``(status, JSON body)``."""
    request = urllib.request.Request(
        server.url + path, method=method, headers={"X-API-Key": key,
                                                   "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def record(browser) -> dict[str, str]:
    """What the page recorded on <body> (app.js: data-job-id, data-sse-events, ...)."""
    return browser.execute_script("return Object.assign({}, document.body.dataset)")


def open_page(browser, server, key: str | None = KEY):
    """Load the page; type ``key`` into the key box (None: keep the tab's stored key)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url + "/")
    if key is not None:
        box = browser.find_element(By.ID, "api-key")
        box.clear()
        box.send_keys(key, Keys.TAB)                 # change: stored, models and history load
    wait_for("the page to load its schema, models and history",
             lambda: record(browser).get("ready") == "true")
    if key is not None:
        wait_for("the key to be stored", lambda: browser.execute_script(
            "return sessionStorage.getItem('musicgen-api-key')") == key)


def field(browser, name: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'[data-field="{name}"] [name="{name}"]')


def fill(browser, prompt: str, stream: bool, **settings) -> None:
    """Type the prompt and settings, and set the stream box, as a student would."""
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    for name, value in settings.items():
        control = field(browser, name)
        control.clear()
        control.send_keys(str(value))
    check = browser.find_element(By.ID, "stream")
    if check.is_selected() != stream:
        check.click()


def error_box(browser) -> tuple[str | None, str]:
    """``(data-status, text)`` of the page's error box, or ``(None, "")`` while it is hidden."""
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "error")
    return (box.get_attribute("data-status"), box.text) if box.is_displayed() else (None, "")


def page_errors(browser) -> list[str]:
    """Console errors other than Chromium's line for an HTTP error answer (a 401 the page
    shows is no fault of the page)."""
    return [e["message"] for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and not HTTP_ERROR.search(e["message"])]


def click(browser, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, element_id).click()


def job_done(browser) -> str:
    return wait_for("the job's end", lambda: record(browser).get("jobStatus"))


# --- the tests -------------------------------------------------------------------------------
def test_page_loads_with_no_errors_and_talks_only_to_its_server(server, browser):
    from selenium.webdriver.common.by import By

    # a tab that has the key already (a fresh one asks for it: a 401 from /v1/models)
    browser.get(server.url + "/web/style.css")
    browser.execute_script("sessionStorage.setItem('musicgen-api-key', arguments[0])", KEY)
    browser.get_log("browser"), browser.get_log("performance")          # start from here
    open_page(browser, server, key=None)
    assert browser.find_element(By.ID, "api-key").get_property("value") == KEY
    assert browser.title == "musicgen_edu"
    assert browser.find_element(By.ID, "error").is_displayed() is False
    console = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert console == [], console
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    origin = server.url.removeprefix("http://")
    elsewhere = [u for u in urls if not re.match(rf"(https?|wss?)://{re.escape(origin)}/|data:",
                                                 u)]
    assert urls and not elsewhere, elsewhere
    assert {f"{server.url}/web/{name}" for name in ("app.js", "api.js", "form.js", "run.js",
                                                    "style.css")} <= set(urls)
    assert {f"{server.url}/openapi.json", f"{server.url}/v1/models"} <= set(urls)
    # the key went as a header, never in the URL of an HTTP request
    assert not any(KEY in u for u in urls), urls

    # the page's own answers: no key needed, a strict CSP, only its two files, not in the API
    with urllib.request.urlopen(server.url + "/", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/html")
        csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp, csp
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url + "/web/..%2Fapp.py", timeout=10)
    assert missing.value.code == 404
    paths = call(server, "GET", "/openapi.json")[1]["paths"]
    assert "/" not in paths and not any(p.startswith("/web") for p in paths)


def test_model_picker_lists_the_served_models(server, browser):
    from selenium.webdriver.support.ui import Select

    open_page(browser, server)
    served = call(server, "GET", "/v1/models")[1]
    picker = Select(browser.find_element("id", "model"))
    assert [o.get_attribute("value") for o in picker.options] == [
        m["name"] for m in served["models"]] == ["debug", "debug-stereo"]
    assert picker.first_selected_option.get_attribute("value") == served["default"] == "debug"
    assert "stereo" in picker.options[1].text and "not loaded yet" in picker.options[1].text


def test_settings_are_one_control_per_field_of_the_request_schema(server, browser):
    from selenium.webdriver.common.by import By

    def controls() -> dict[str, tuple[str, str]]:
        return {label.get_attribute("data-field"): (
            (c := label.find_element(By.CSS_SELECTOR, "[data-kind]")).get_attribute("data-kind"),
            c.get_attribute("placeholder") or "")
            for label in browser.find_elements(By.CSS_SELECTOR, "#settings [data-field]")}

    open_page(browser, server)
    schema = call(server, "GET", "/openapi.json")[1]["components"]["schemas"]["GenerateRequest"]
    fields = set(schema["properties"]) - {"prompt", "prompts", "model"}   # the page's own
    shown = controls()
    assert set(shown) == fields and {"duration", "negative_prompt", "sampler"} <= fields
    assert shown["duration"] == ("number", "8.0") and shown["top_k"] == ("integer", "250")
    assert shown["use_sampling"][0] == "boolean" and shown["sampler"] == ("string", "counter")

    # a field added to GenerationConfig reaches the schema, and the page, with no edit of it
    properties = server.app.openapi()["components"]["schemas"]["GenerateRequest"]["properties"]
    properties["brightness"] = {"anyOf": [{"type": "number"}, {"type": "null"}],
                                "title": "Brightness",
                                "description": "GenerationConfig.brightness (default 0.5)"}
    try:
        open_page(browser, server)
        assert controls()["brightness"] == ("number", "0.5")
    finally:
        del properties["brightness"]
    assert page_errors(browser) == []


def test_prompt_feedback_comes_from_prompt_engineer(server, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    fill(browser, "piano", stream=True)
    report = call(server, "POST", "/v1/prompts/validate", {"prompt": "piano"})[1]
    feedback = browser.find_element(By.ID, "feedback")
    tokens = wait_for("the prompt's token count", lambda: feedback.find_elements(
        By.CSS_SELECTOR, ".tokens"))[0]
    assert tokens.get_attribute("data-tokens") == str(report["n_tokens"])
    assert tokens.text.startswith(f"{report['n_tokens']} / {report['max_tokens']} tokens")
    assert [w.text for w in feedback.find_elements(By.CSS_SELECTOR, ".warnings li")] == (
        report["warnings"]) != []
    assert [f.text for f in feedback.find_elements(By.CSS_SELECTOR, ".facet")] == (
        report["missing"]) != []
    # a prompt over the text encoder's limit: the error is the engineer's own text
    long = " ".join(["lofi"] * 300)
    fill(browser, long, stream=True)
    errors = wait_for("the too-long error", lambda: feedback.find_elements(
        By.CSS_SELECTOR, ".errors li"))
    assert errors[0].text == call(server, "POST", "/v1/prompts/validate",
                                  {"prompt": long})[1]["errors"][0]
    assert feedback.get_attribute("data-ok") == "false"
    assert page_errors(browser) == []


def test_generate_shows_progress_plays_and_keeps_a_download(server, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    fill(browser, "calm lo-fi piano with soft drums", stream=False, duration=8, seed=7, top_k=50)
    click(browser, "generate")
    assert job_done(browser) == "succeeded"
    seen = record(browser)
    job = call(server, "GET", f"/v1/jobs/{seen['jobId']}")[1]
    assert job["status"] == "succeeded" and job["kind"] == "generate"
    # the controls made the request: its settings and seed are the ones typed in
    assert job["request"]["settings"]["top_k"] == 50 and job["request"]["seeds"] == [7]
    assert job["request"]["settings"]["duration"] == 8.0
    # progress came over SSE: a running step part-way, then the last step
    assert int(seen["sseEvents"]) >= 3 and seen["sseSawRunning"] == "true", seen
    assert seen["sseLastStep"] == seen["sseTotal"] == str(job["total"])
    progress = browser.find_element(By.ID, "progress")
    assert progress.get_property("value") == progress.get_property("max") == job["total"]
    assert "done" in browser.find_element(By.ID, "status").text

    # the player holds the clip and plays it (autoplay: no click needed)
    player = browser.find_element(By.ID, "player")
    wait_for("the player to play", lambda: browser.execute_script(
        "const p = arguments[0]; return !p.paused && p.currentTime > 0", player), 20)
    assert player.get_attribute("src").startswith("blob:")
    assert abs(player.get_property("duration") - 8.0) < 0.01

    # the history row of the job, with a download link to the same WAV
    row = f'#history tr[data-job-id="{job["id"]}"][data-status="succeeded"]'
    link = wait_for("the history row's download link", lambda: browser.find_elements(
        By.CSS_SELECTOR, f'{row} a.download[href^="blob:"]'))[0]
    assert "calm lo-fi piano with soft drums" in browser.find_element(By.CSS_SELECTOR, row).text
    assert link.get_attribute("download") == f"musicgen_{job['id'][:8]}.wav"
    head, size = browser.execute_async_script(
        "const done = arguments[1]; fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => "
        "done([String.fromCharCode(...new Uint8Array(b, 0, 4)), b.byteLength]), "
        "e => done([String(e), 0]))", link.get_attribute("href"))
    assert head == "RIFF" and size >= 8 * 32000 * 2          # 8 s of 16-bit mono at 32 kHz
    assert page_errors(browser) == []


def test_streamed_audio_plays_before_the_job_ends(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    fill(browser, "upbeat synthwave with gated drums, 110 bpm", stream=True, duration=4)
    click(browser, "generate")
    assert job_done(browser) == "succeeded"
    seen = record(browser)
    job = call(server, "GET", f"/v1/jobs/{seen['jobId']}")[1]
    assert job["kind"] == "stream" and job["status"] == "succeeded"
    # 0.5 s chunks, adding up to the 4 s clip; the first was scheduled, and had started
    # playing, before the stream said done
    assert int(seen["streamChunks"]) >= 4, seen
    assert abs(float(seen["streamedSeconds"]) - 4.0) < 0.01, seen
    assert int(seen["firstChunkAt"]) < int(seen["doneAt"]), seen
    assert seen["playedBeforeDone"] == "true", seen
    assert int(seen["sseEvents"]) >= 1                        # progress followed the stream too
    # the whole clip then lands in the player (not replayed) and the history
    player = browser.find_element(By.ID, "player")
    wait_for("the player's clip", lambda: player.get_attribute("data-job-id") == job["id"])
    assert player.get_property("paused") is True
    wait_for("the history row", lambda: browser.find_elements(
        By.CSS_SELECTOR, f'#history tr[data-job-id="{job["id"]}"] a.download'))
    assert page_errors(browser) == []

    # the picture the docs show
    time.sleep(0.3)                                           # the last repaint
    shot = tmp_path / "web.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("MUSICGEN_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)


def test_cancel_stops_a_long_job(server, browser):
    open_page(browser, server)
    fill(browser, "a slow ambient drone", stream=True, duration=30)
    click(browser, "generate")
    wait_for("progress of the running job", lambda: int(record(browser).get("sseLastStep", 0)))
    click(browser, "cancel")
    assert job_done(browser) == "cancelled"
    job = call(server, "GET", f"/v1/jobs/{record(browser)['jobId']}")[1]
    assert job["status"] == "cancelled" and 0 < job["step"] < job["total"]
    assert "cancelled" in browser.find_element("id", "status").text
    assert error_box(browser) == (None, "")
    assert page_errors(browser) == []


@pytest.mark.parametrize("stream", [False, True], ids=["post", "websocket"])
def test_422_shows_the_servers_detail(server, browser, stream):
    open_page(browser, server)
    fill(browser, "lo-fi piano", stream=stream, duration=1000)
    status, answer = call(server, "POST", "/v1/generate",
                          {"prompt": "lo-fi piano", "model": "debug", "duration": 1000})
    assert status == 422 and "duration" in answer["detail"]
    click(browser, "generate")
    assert job_done(browser) == "failed"
    code, text = wait_for("the error", lambda: error_box(browser)[0] and error_box(browser))
    assert code == "422" and "The request is not valid (422)" in text
    assert answer["detail"] in text
    assert page_errors(browser) == []


def test_401_says_the_key_is_wrong(server, browser):
    open_page(browser, server, key="not-the-right-key")
    code, text = wait_for("the 401", lambda: error_box(browser)[0] == "401" and error_box(
        browser))
    assert code == "401" and "enter the key you were given" in text
    assert "unknown API key" in text                          # the server's detail
    fill(browser, "lo-fi piano", stream=True, duration=1)
    click(browser, "generate")                                # the WebSocket says 401 too
    assert job_done(browser) == "failed"
    assert error_box(browser)[0] == "401"
    open_page(browser, server)                                # the right key: no error
    assert error_box(browser) == (None, "")
    assert page_errors(browser) == []


def test_429_says_when_to_retry(browser, tmp_path):
    # a burst of one request per key: the page's first call passes, its second is refused
    with start(tmp_path / "store", rate_limit_per_minute=1, rate_limit_burst=1) as limited:
        open_page(browser, limited)
        code, text = wait_for("the 429", lambda: error_box(browser)[0] == "429" and error_box(
            browser))
    assert code == "429" and re.search(r"wait \d+ s before trying again", text), text
    assert "rate limit exceeded" in text                      # the server's detail
    assert page_errors(browser) == []
