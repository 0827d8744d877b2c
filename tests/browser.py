"""A real browser for the stage view's tests: the system's headless Chromium driven by selenium
through the chromedriver of the same Debian release (``apt-get install chromium
chromium-driver``; .ci/run installs them). Nothing is downloaded: no browser build of
selenium's own, no driver.

Without Chromium, its driver or selenium a browser test is skipped here and fails in CI
(``need``, as the JACK tests do).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

from jackserver import need

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"
# Root needs --no-sandbox; the rest keeps a test browser from reaching out or doing more than
# it must on a small machine.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
         "--window-size=1280,760")


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


def need_browser() -> None:
    need(chromium_path() is not None, "no Chromium here (apt-get install chromium)")
    need(shutil.which(DRIVER) is not None,
         "no chromedriver here (apt-get install chromium-driver)")
    need(importlib.util.find_spec("selenium") is not None,
         "selenium is not installed (pip install -e '.[test]')")


class Browser:
    """``with Browser() as b:`` a headless Chromium with a fresh profile; ``b.driver`` is
    selenium's."""

    def __init__(self, width: int = 1280, height: int = 760):
        need_browser()
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="livepiano-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium_path()
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument(f"--user-data-dir={self.profile}")
        self.driver = webdriver.Chrome(service=Service(shutil.which(DRIVER)), options=options)
        self.driver.set_page_load_timeout(30)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, script: str, timeout: float = 20.0, what: str = ""):
        """Until ``script`` (a JS expression) is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(f"return ({script});")
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"the page did not show {what or script} within {timeout:g} s")

    def roll_colours(self) -> dict:
        """How many pixels of the piano roll are the pianist's colour and the model's (their
        hue, as `livepiano plot` draws it, at any brightness)."""
        return self.js("""
            const c = document.getElementById('roll');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const count = {p: 0, m: 0};
            for (let i = 0; i < d.length; i += 4) {
              const r = d[i], g = d[i + 1], b = d[i + 2];
              const max = Math.max(r, g, b), min = Math.min(r, g, b);
              if (max < 60 || max - min < 0.5 * max) continue;  // background, grey lines
              if (b === max && r < g) count.p++;
              else if (r === max && b === min && g < r) count.m++;
            }
            return count;""")

    def screenshot(self, path: Path) -> Path:
        self.driver.save_screenshot(str(path))
        return path
