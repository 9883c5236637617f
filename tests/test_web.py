"""The search page in a real headless Chromium: `rerank-sidecar demo --web --tiny`, a text and an image query.

Drives Debian's `chromium` through `chromium-driver` with selenium (WebDriver: waits and file inputs
without a Node toolchain). A missing browser, driver or selenium FAILS the test: tests/run.sh installs
them. Screenshots land in tests/artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.apps.demo_data import DATA_DIR
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--window-size=1280,1100",
)  # fmt: skip


@pytest.fixture(scope="module")
def page_url(tmp_path_factory) -> Iterator[str]:
    """`rerank-sidecar demo --web --tiny` on a free loopback port (tiny random models built in a temp dir)."""
    port, log_path = free_port(), tmp_path_factory.mktemp("web") / "demo-web.log"
    cache = tmp_path_factory.mktemp("tiny-models")
    command = [sys.executable, "-m", "sidecar.cli", "demo", "--web", "--tiny", "--cache-dir", str(cache)]
    with open(log_path, "w") as log:
        process = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(url + "api/config", timeout=5) as response:
                    json.load(response)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"demo --web did not come up (exit {process.poll()}):\n{log_path.read_text()[-4000:]}")
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    """Headless Debian chromium with a fresh profile, via chromium-driver."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(f"missing {missing}: install them with `apt-get install -y chromium chromium-driver`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed (pip install selenium; it is in the test extras)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def run_query(driver, url: str, *, text: str = "", image: Path | None = None) -> dict[str, list[dict[str, object]]]:
    """Load the page, fill in the query, search, wait for both columns; return what each column shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
    if text:
        driver.find_element(By.ID, "text").send_keys(text)
    if image is not None:
        driver.find_element(By.ID, "image").send_keys(str(image))  # a real file upload through the <input>
        wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("hidden") is None)
    driver.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
    status = driver.find_element(By.ID, "status").text
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done", status
    images_loaded = "return [...document.querySelectorAll('.results img')].every(i => i.complete && i.naturalWidth > 0)"
    wait.until(lambda d: d.execute_script(images_loaded))
    columns = {}
    for column in ("first-stage", "reranked"):
        rows = driver.find_elements(By.CSS_SELECTOR, f"#{column} li")
        columns[column] = [
            {
                "id": r.get_attribute("data-id"),
                "title": r.find_element(By.CLASS_NAME, "title").text,
                "image_width": r.find_element(By.TAG_NAME, "img").get_property("naturalWidth"),
                "scores": r.find_element(By.CLASS_NAME, "scores").text,
                "change": r.find_element(By.CLASS_NAME, "change").text,
            }
            for r in rows
        ]
    columns["timings"] = [{"text": s.text} for s in driver.find_elements(By.CSS_SELECTOR, "#timings span")]
    return columns


def check_columns(columns: dict[str, list[dict[str, object]]]) -> None:
    """Both columns hold the same candidates, each row with a loaded image, a title and both scores."""
    first, reranked = columns["first-stage"], columns["reranked"]
    assert len(first) == len(reranked) == 10
    for row in first + reranked:
        assert row["title"] and int(row["image_width"]) > 0, row
        assert "first stage" in str(row["scores"]) and "rerank 0." in str(row["scores"]), row
    assert all(row["change"] for row in reranked)  # ▲n, ▼n or =
    shown = " ".join(t["text"] for t in columns["timings"])
    for stage in ("first stage", "rerank", "total"):
        assert stage in shown, shown


def test_text_query(browser, page_url) -> None:
    columns = run_query(browser, page_url, text="a cat with green eyes")
    check_columns(columns)
    shown = " ".join(t["text"] for t in columns["timings"])
    assert "query embedding" in shown and "first stage (milvus, hybrid)" in shown, shown
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-text-query.png"))


def test_image_query(browser, page_url) -> None:
    columns = run_query(browser, page_url, image=DATA_DIR / "queries" / "dahlia.jpg")
    check_columns(columns)
    assert "first stage (milvus, dense)" in " ".join(t["text"] for t in columns["timings"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-image-query.png"))


def test_experiment_mode_interleaves_and_records_clicks(browser, page_url) -> None:
    """Experiment mode: one interleaved list whose hits say their arm; clicks are logged and the report counts them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_url)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
    browser.find_element(By.ID, "experiment-mode").click()
    for query, clicks in (("a cat with green eyes", 2), ("red flowers", 1)):
        text = browser.find_element(By.ID, "text")
        text.clear()
        text.send_keys(query)
        browser.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
        assert not browser.find_element(By.ID, "experiment-panel").get_attribute("hidden")
        rows = browser.find_elements(By.CSS_SELECTOR, "#interleaved li")
        assert len(rows) == 10 and {r.get_attribute("data-arm") for r in rows} <= {"first_stage", "reranked"}
        assert len({r.get_attribute("data-id") for r in rows}) == 10
        for r in rows[:clicks]:
            r.click()
            wait.until(lambda d, r=r: "clicked" in r.get_attribute("class"))
    report = browser.find_element(By.ID, "report")
    wait.until(lambda d: report.get_attribute("data-events") == str(10 + 2 + 10 + 1))  # impressions and clicks
    assert report.get_attribute("data-queries") == "2"
    decided = int(report.get_attribute("data-wins")) + int(report.get_attribute("data-losses"))
    assert decided + int(report.get_attribute("data-ties")) == 2 and "queries" in report.text
    with urllib.request.urlopen(page_url + "api/experiment", timeout=30) as response:
        logged = json.load(response)
    assert logged["design"] == "interleave" and logged["queries"] == 2 and logged["events"] == 23
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-experiment.png"))
