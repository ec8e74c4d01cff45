"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.

Selenium is given the driver's path, so it never runs Selenium Manager and never downloads a
browser or a driver: the test machine's packages are what runs (``.ci/run`` installs them).
Each browser starts with a fresh profile directory, without sync, component updates or any
other background traffic.

Where the browser is missing, :func:`require_chromium` skips with the reason, except under CI
(``CI`` set), where a missing browser fails the run instead of skipping the tests silently.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = os.environ.get("COROLLA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("COROLLA_CHROMEDRIVER", "/usr/bin/chromedriver")
DESKTOP = (1280, 900)
PHONE = (390, 844)
T = TypeVar("T")


def require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (the dev extra)")
    if not missing:
        return
    reason = (f"browser tests need {', '.join(missing)}: apt-get install -y chromium "
              "chromium-driver, and pip install -e '.[dev]'")
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests; {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(window: tuple[int, int] = DESKTOP) -> Iterator[Any]:
    """A headless Chromium WebDriver with a profile of its own, quit at exit."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="corolla-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-default-apps", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, fn: Callable[[Any], T], what: str, timeout: float = 30) -> T:
    """Poll ``fn(driver)`` (Selenium's wait) until it returns a true value."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(fn)  # type: ignore[no-any-return]
    except TimeoutException:
        logs = "\n".join(str(e) for e in driver.get_log("browser"))
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                             f"browser log:\n{logs}") from None


def screenshot(driver: Any, path: Path, width: int) -> Path:
    """The whole page, top to bottom, as a PNG, laid out for a viewport ``width`` CSS pixels
    wide (below 600: as a phone, which honours the page's viewport meta tag)."""
    phone = width < 600
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": PHONE[1] if phone else DESKTOP[1], "deviceScaleFactor": 1,
        "mobile": phone})
    try:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
