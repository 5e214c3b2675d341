"""The README's screenshot of the `reidx serve` page: start the server on an index, upload one query crop in
headless Chromium (Selenium), wait for the ranked gallery and save a PNG.

Usage: `python scripts/serve_screenshot.py --index demo/index --query demo/data/lr/r4/0002_c3s1_000001_00.png
--out docs/img/serve.png` (needs chromium and chromedriver, e.g. Debian's `chromium chromium-driver`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, required=True, help="index directory written by `reidx embed`")
    parser.add_argument("--query", type=Path, required=True, help="the crop to upload")
    parser.add_argument("--out", type=Path, default=Path("docs/img/serve.png"), help="PNG to write")
    parser.add_argument("--top-k", type=int, default=8, help="results shown")
    parser.add_argument("--min-score", type=float, default=None, help="the server's --min-score")
    parser.add_argument("--size", default="1180x760", help="window WIDTHxHEIGHT")
    parser.add_argument("--browser", default="/usr/bin/chromium")
    parser.add_argument("--driver", default="/usr/bin/chromedriver")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "reidx", "serve", "--gallery", str(args.index), "--port", "0"]
    if args.min_score is not None:
        command += ["--min-score", str(args.min_score)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = args.browser
    width, height = args.size.split("x")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    browser = None
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", server.stderr.readline())
        if not url:
            raise SystemExit("reidx serve did not start")
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=args.driver))
        browser.get(f"{url[0]}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "gallery entries" in d.find_element(By.ID, "info").text)
        browser.find_element(By.ID, "top_k").clear()
        browser.find_element(By.ID, "top_k").send_keys(str(args.top_k))
        browser.find_element(By.ID, "images").send_keys(str(args.query.resolve()))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == args.top_k)
        loaded = "return [...document.querySelectorAll('img')].every((img) => img.complete && img.naturalWidth > 0)"
        wait.until(lambda d: d.execute_script(loaded))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
