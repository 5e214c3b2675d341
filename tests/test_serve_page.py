"""The ``reidx serve`` page in real headless Chromium (Selenium): upload a crop, see the ranked gallery and the
"not in gallery" state. Skips when Chromium or chromedriver is not installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install .[dev])")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

#: Where Debian's chromium and chromium-driver packages put their binaries (else found on PATH).
BROWSERS = ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
DRIVERS = ("/usr/bin/chromedriver", shutil.which("chromedriver") or "")


def first_file(candidates: tuple[str, ...]) -> str | None:
    return next((path for path in candidates if path and Path(path).is_file()), None)


def open_browser(size: tuple[int, int] = (1200, 900)):
    """Headless Chromium through chromedriver, or a skip naming what is missing."""
    browser, driver = first_file(BROWSERS), first_file(DRIVERS)
    if browser is None or driver is None:
        pytest.skip(f"no headless browser here (chromium: {browser}, chromedriver: {driver}); apt install chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


@pytest.fixture
def browser():
    driver = open_browser()
    yield driver
    driver.quit()


def test_page_uploads_a_crop_and_shows_the_ranked_gallery(browser, live_server: str, tiny_gallery: Path) -> None:
    browser.get(f"{live_server}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "12 gallery entries" in d.find_element(By.ID, "info").text)
    browser.find_element(By.ID, "top_k").clear()
    browser.find_element(By.ID, "top_k").send_keys("4")
    query = tiny_gallery / "gallery" / "0003_c2s1_000001_00.png"
    browser.find_element(By.ID, "images").send_keys(str(query))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == 4)
    hits = browser.find_elements(By.CSS_SELECTOR, ".hit")
    assert [hit.get_attribute("data-rank") for hit in hits] == ["1", "2", "3", "4"]
    assert hits[0].text.startswith("#1 1.000") and "camera 2 · pid 3" in hits[0].text
    assert "match" in hits[0].get_attribute("class")  # same pid as the query's name: a green border
    loaded = "return [...document.querySelectorAll('img')].every((img) => img.complete && img.naturalWidth > 0)"
    wait.until(lambda d: d.execute_script(loaded))  # the query and every gallery crop were served
    assert browser.find_elements(By.CSS_SELECTOR, ".verdict") == []

    browser.find_element(By.ID, "min_score").send_keys("1.5")
    browser.find_element(By.ID, "search").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".verdict.absent"))
    verdict = browser.find_element(By.CSS_SELECTOR, ".verdict.absent").text
    assert verdict.startswith("Not in gallery: best score 1.000 is below the min score 1.5")
    assert all("below" in hit.get_attribute("class") for hit in browser.find_elements(By.CSS_SELECTOR, ".hit"))


def test_page_shows_a_bad_upload_as_one_line(browser, live_server: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    browser.get(f"{live_server}/")
    browser.find_element(By.ID, "images").send_keys(str(notes))
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text.startswith("cannot read image notes.png")
    assert browser.find_elements(By.CSS_SELECTOR, ".hit") == []
