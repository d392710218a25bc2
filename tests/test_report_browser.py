"""The HTML report in a real headless Chromium (selenium, Debian's chromium + chromium-driver).

Nothing is downloaded: the browser and driver are the system ones at fixed paths. The test is
skipped, saying why, only when one of them or selenium is missing. CI installs them with
``apt-get install chromium chromium-driver`` and ``pip install selenium``.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from tests.test_report import MODELS, PAIR, TARGETS, copy_results, tiny_results_dir

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_ENV = "SHIFTBENCH_REPORT_SCREENSHOT_DIR"  # optional: also keep the screenshot there


def _missing() -> list[str]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    return missing


pytestmark = pytest.mark.skipif(
    bool(_missing()),
    reason=f"browser test needs {', '.join(_missing())} "
    "(apt-get install chromium chromium-driver; pip install selenium)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_registry, tiny_data_dir) -> Path:
    from shiftbench.reporting.report import write_report

    shared = tiny_results_dir(tmp_path_factory, tiny_registry, tiny_data_dir)
    results = copy_results(shared, tmp_path_factory.mktemp("browser") / "results")
    cards = results.parent / "cards"
    (cards / "pairs").mkdir(parents=True)
    (cards / "pairs" / f"{PAIR}.md").write_text(
        f"# Pair `{PAIR}`\n\nnews -> tweets\n\n| label | news test | tweets test |\n|---|---|---|\n| `negative` | 3 | 10 |\n",
        encoding="utf-8",
    )
    return write_report(results, cards_dir=cards)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _load(driver, report: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(report.resolve().as_uri())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"
        )
    )


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def test_report_renders_in_chromium(driver, report, tmp_path_factory):
    from selenium.webdriver.common.by import By

    _load(driver, report)
    assert _severe(driver) == []

    # every model name is visible text (WebElement.text is what is rendered, not hidden markup)
    body = driver.find_element(By.TAG_NAME, "body").text
    cells = {td.text for td in driver.find_elements(By.CSS_SELECTOR, "table.leaderboard td")}
    for model in MODELS:
        assert model in cells, f"{model} not shown in the leaderboard"
        assert model in body
    assert f"Pair {PAIR}" in body

    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight, i.src.slice(0, 22), i.alt])"
    )
    assert len(images) == len(TARGETS) + 1
    for width, height, src, alt in images:
        assert width > 0 and height > 0, alt
        assert src == "data:image/png;base64,"
    # nothing was fetched from anywhere but the file itself and data: URIs
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith(("data:", "file:")) for name in fetched), fetched

    # the data card opens and its Markdown table is a real table
    details = driver.find_element(By.CSS_SELECTOR, "details.card")
    assert not details.find_element(By.TAG_NAME, "table").is_displayed()
    details.find_element(By.TAG_NAME, "summary").click()
    table = details.find_element(By.TAG_NAME, "table")
    assert table.is_displayed() and table.find_element(By.TAG_NAME, "th").text == "label"
    details.find_element(By.TAG_NAME, "summary").click()  # closed again for the screenshot

    # a full-page screenshot, to look at
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(height + 140, 16000))
    shot = tmp_path_factory.mktemp("screenshot") / "report.png"
    png = base64.b64decode(driver.get_screenshot_as_base64())
    shot.write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    if os.environ.get(SCREENSHOT_ENV):
        dest = Path(os.environ[SCREENSHOT_ENV])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest / "report.png")
    print(f"screenshot: {shot}")
    assert _severe(driver) == []


def test_console_errors_are_caught(driver, report):
    """The console check above is live: an error on the page does show up as SEVERE."""
    _load(driver, report)
    _severe(driver)  # drain
    driver.execute_script("console.error('shiftbench-probe')")
    assert any("shiftbench-probe" in entry["message"] for entry in _severe(driver))
