"""The web page in a real browser: headless Chromium against ``corolla serve`` on loopback.

One server (module scope) serves the embedded flowers model and the demo colour classifier;
the tests drive the page as a person would: pick photos (the file input), read the labels,
use the keyboard only, read the operator panel. A server with API keys checks that the page
asks for a key, works with it and is refused without it; a server with small limits and a
model that is still loading checks the readable errors (non-image, loading, 413, 429).

Flower photos come from /work/shared/datasets/flower_photos when it is there (chosen from the
default model's test split); otherwise the colour classifier and solid-colour photos stand in,
whose labels are certain. Screenshots (desktop and phone widths) are kept in the directory that
the run prints at its end (``COROLLA_TEST_ARTIFACTS``, default ``test-artifacts/`` in the
repository).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from browser import DESKTOP, PHONE, chromium, require_chromium, screenshot, wait_for
from PIL import Image

from corolla.demo_model import write_demo_version
from corolla.runtimes.fake import write_fake_version
from corolla.serve_options import default_model_base_path

if TYPE_CHECKING:
    from corolla_harness import CorollaProcess, StartCorolla

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("COROLLA_TEST_ARTIFACTS", REPO / "test-artifacts")) / "web-ui"
FLOWERS = Path("/work/shared/datasets/flower_photos")
# From the default model's test split (never trained on); it labels each with over 0.9.
FLOWER_PHOTOS = {"tulips": "tulips/112951086_150a59d499_n.jpg",
                 "sunflowers": "sunflowers/14144522269_bc20029375_m.jpg"}
COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220)}


class _Summary:
    """Prints where the screenshots are, at the end of the run."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_line(f"web UI screenshots: {ARTIFACTS}")


@pytest.fixture(scope="module", autouse=True)
def _artifacts(request: pytest.FixtureRequest) -> None:
    require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    manager = request.config.pluginmanager
    if not manager.has_plugin("corolla-web-ui-artifacts"):
        manager.register(_Summary(), "corolla-web-ui-artifacts")


def solid_photo(path: Path, colour: str) -> Path:
    Image.new("RGB", (64, 48), COLOURS[colour]).save(path, "JPEG", quality=95)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two photos with the model and the label each must get."""
    work = tmp_path_factory.mktemp("photos")
    if all((FLOWERS / p).is_file() for p in FLOWER_PHOTOS.values()):
        return {"model": "flowers",
                "files": [(FLOWERS / p, label) for label, p in FLOWER_PHOTOS.items()]}
    return {"model": "colors",
            "files": [(solid_photo(work / f"{c}.jpg", c), c) for c in COLOURS]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           servers_in: Callable[[Path], Any], models_config: Callable[..., str]
           ) -> Iterator[CorollaProcess]:
    work = tmp_path_factory.mktemp("webui")
    write_demo_version(work / "colors", 1, size=16)
    cfg = work / "models.config"
    cfg.write_text(models_config({"name": "colors", "base_path": str(work / "colors")},
                                 {"name": "flowers", "base_path": default_model_base_path()}))
    with servers_in(work) as start:
        yield start(f"--model_config_file={cfg}", wait_for=("colors", "flowers"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def by_id(driver: Any, id_: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, id_)


def cards(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def open_page(driver: Any, url: str, model: str | None = None) -> None:
    """Load the page and wait until it lists the models (and choose ``model``)."""
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/")
    wait_for(driver, lambda d: "Connected" in by_id(d, "server-state").text, "the model list")
    if model is not None:
        Select(by_id(driver, "model")).select_by_value(model)


def pick(driver: Any, *files: Path) -> None:
    """Choose files in the "Choose photos" control (as its file dialog would)."""
    by_id(driver, "files").send_keys("\n".join(str(f) for f in files))


def settled(driver: Any, n: int) -> list[Any]:
    """Wait until the newest ``n`` result cards have an answer or an error."""
    def done(d: Any) -> list[Any] | None:
        cs = cards(d)[:n]
        states = [c.get_attribute("data-state") for c in cs]
        return cs if len(cs) == n and all(s in ("done", "error") for s in states) else None

    return wait_for(driver, done, f"{n} results")


def labels(card: Any) -> list[tuple[str, float]]:
    from selenium.webdriver.common.by import By

    out = []
    for li in card.find_elements(By.CSS_SELECTOR, ".labels li"):
        name = li.find_element(By.CSS_SELECTOR, ".label").text
        pct = float(li.find_element(By.CSS_SELECTOR, ".pct").text.rstrip("%"))
        out.append((name, pct))
    return out


def shoot(driver: Any, name: str) -> None:
    for width, kind in ((DESKTOP[0], "desktop"), (PHONE[0], "phone")):
        path = screenshot(driver, ARTIFACTS / f"{name}-{kind}.png", width)
        assert path.stat().st_size > 1000


# ---- the page -------------------------------------------------------------------------------


def test_upload_a_photo_and_see_its_label(browser: Any, server: CorollaProcess,
                                          photos: dict[str, Any]) -> None:
    open_page(browser, server.url, photos["model"])
    assert browser.title == "Corolla"
    rows = by_id(browser, "models").text
    assert "colors" in rows and "flowers" in rows and "READY" in rows
    path, label = photos["files"][0]
    pick(browser, path)
    (card,) = settled(browser, 1)
    assert card.get_attribute("data-state") == "done", card.text
    top = labels(card)
    assert top[0][0] == label and top[0][1] > 50, top
    assert len(top) == 5  # top_k 5: both models have five classes, all shown
    assert abs(sum(p for _, p in top) - 100) < 1
    meta = card.find_element("css selector", ".meta").text
    assert re.fullmatch(rf"{photos['model']}, version 1, [\d.]+ ms round trip", meta), meta
    # The equivalent request, ready to paste, answers the same.
    curl = card.find_element("css selector", ".curl code").get_attribute("textContent")
    assert curl == (f"curl -F 'image=@{path.name}' -F 'top_k=5' "
                    f"'{server.url}/v1/models/{photos['model']}:predict'")
    with path.open("rb") as f:
        r = server.post(f"/v1/models/{photos['model']}:predict", files={"image": f},
                        data={"top_k": "5"})
    assert r.json()["predictions"][0]["label"] == label
    shoot(browser, "classified")


def test_two_photos_at_once(browser: Any, server: CorollaProcess, photos: dict[str, Any]) -> None:
    open_page(browser, server.url, photos["model"])
    files = photos["files"]
    pick(browser, *(p for p, _ in files))
    got = settled(browser, 2)
    # Shown in the order they were picked, each with its own answer.
    for card, (path, label) in zip(got, files, strict=True):
        assert card.find_element("css selector", ".name").text == path.name
        assert labels(card)[0][0] == label, card.text
    assert "2 classified" in by_id(browser, "upload-note").text


def test_a_file_that_is_not_an_image(browser: Any, server: CorollaProcess, tmp_path: Path) -> None:
    open_page(browser, server.url, "flowers")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo at all\n")
    pick(browser, notes)
    (card,) = settled(browser, 1)
    assert card.get_attribute("data-state") == "error"
    error = card.find_element("css selector", ".error").text
    assert error == ("“notes.txt” is not a photo the server can read. Send a JPEG, PNG, WebP, "
                     "GIF, BMP or TIFF image.")
    assert "Failed (HTTP 400)" in card.text and "The server said: image 0:" in card.text
    assert "Retry" not in card.text  # the same bytes would fail again
    assert "1 failed" in by_id(browser, "upload-note").text


def test_keyboard_only(browser: Any, server: CorollaProcess, tmp_path: Path) -> None:
    """From the top of the page, Tab and the arrow keys alone reach the model choice and the
    upload control, which shows where the focus is; the results' controls work with Enter."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server.url)
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    trail: list[str] = []

    def tab_to(target: str, limit: int = 30) -> None:
        for _ in range(limit):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            el = browser.switch_to.active_element
            trail.append(el.get_attribute("id") or el.tag_name)
            if trail[-1] == target:
                return
        raise AssertionError(f"Tab never reached #{target}: {trail}")

    tab_to("model")
    assert trail[0] == "a"  # the skip link comes first
    select = browser.switch_to.active_element
    assert select.get_attribute("value") == "colors"  # the first model that is ready
    select.send_keys(Keys.ARROW_DOWN)
    assert by_id(browser, "model").get_attribute("value") == "flowers"
    select.send_keys(Keys.ARROW_UP)
    assert by_id(browser, "model").get_attribute("value") == "colors"
    tab_to("files")
    # The input itself is hidden; its label, styled as a button, shows the focus ring.
    outline = browser.execute_script(
        "const s = getComputedStyle(document.querySelector('label[for=files]'));"
        "return [s.outlineStyle, s.outlineWidth];")
    assert outline[0] == "solid" and outline[1] != "0px", outline
    screenshot(browser, ARTIFACTS / "keyboard-focus-desktop.png", DESKTOP[0])
    # A file dialog is the operating system's; Selenium fills it for the focused input.
    red = solid_photo(tmp_path / "red.jpg", "red")
    browser.switch_to.active_element.send_keys(str(red))
    (card,) = settled(browser, 1)
    assert labels(card)[0][0] == "red", card.text
    tab_to("clear")  # past the status line, to the results' controls
    ActionChains(browser).send_keys(Keys.TAB).perform()
    summary = browser.switch_to.active_element
    assert summary.tag_name == "summary", trail
    summary.send_keys(Keys.ENTER)
    code = card.find_element("css selector", ".curl code")
    assert code.is_displayed() and "/v1/models/colors:predict" in code.text


def test_operator_panel(browser: Any, server: CorollaProcess, photos: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server.url, photos["model"])
    table = by_id(browser, "ops")

    def reads() -> int:
        return int(table.get_attribute("data-reads") or 0)

    wait_for(browser, lambda d: reads() >= 1, "the first metrics read")
    by_id(browser, "ops-pause").click()
    wait_for(browser, lambda d: by_id(d, "ops-state").text == "Paused.", "the pause")
    before = reads()
    n = 3
    pick(browser, *(p for p, _ in photos["files"]))
    settled(browser, 2)
    pick(browser, photos["files"][0][0])
    settled(browser, 1)
    by_id(browser, "ops-refresh").click()
    wait_for(browser, lambda d: reads() > before, "a metrics read after the uploads")
    window = float(table.get_attribute("data-window"))
    row = table.find_element(By.CSS_SELECTOR, f"tr[data-model='{photos['model']}']")
    cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")]
    name, rate, errors, error_pct, p50, p99, queue, ready = cells
    assert name == photos["model"]
    # The rate is the requests of the window over its length: the three uploads.
    assert float(rate) * window == pytest.approx(n, rel=0.1), (rate, window)
    assert float(errors) == 0 and error_pct == "0.0%"
    q50, q99 = (float(v.removesuffix(" ms")) for v in (p50, p99))
    assert 0 < q50 <= q99
    assert queue == "0" and ready == "yes"
    assert "Requests in flight" in by_id(browser, "ops-server").text
    shoot(browser, "operator-panel")


# ---- API keys -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, servers_in: Callable[[Path], Any]
          ) -> Iterator[CorollaProcess]:
    work = tmp_path_factory.mktemp("webui-keys")
    write_demo_version(work / "colors", 1, size=16)
    keys = work / "keys"
    keys.write_text("good-key-1234\n")
    with servers_in(work) as start:
        server = start("--model_name=colors", f"--model_base_path={work / 'colors'}",
                       f"--api_keys_file={keys}")
        server.http.headers["authorization"] = "Bearer good-key-1234"
        server.wait_available("colors")
        yield server


def test_api_keys(keyed: CorollaProcess, tmp_path: Path) -> None:
    """The page asks for a key, is refused with a wrong one and without one, works with the
    right one, and keeps it for the browser tab's session only."""
    red = solid_photo(tmp_path / "red.jpg", "red")
    with chromium() as driver:
        driver.get(keyed.url + "/")  # the page itself needs no key
        wait_for(driver, lambda d: by_id(d, "key-section").is_displayed(), "the key prompt")
        assert driver.switch_to.active_element.get_attribute("id") == "key-input"
        assert by_id(driver, "server-state").text == "This server requires an API key."
        assert "requires an API key" in by_id(driver, "key-error").text
        assert by_id(driver, "model").get_attribute("value") == ""  # no model list without it
        shoot(driver, "api-key-prompt")
        by_id(driver, "key-input").send_keys("wrong-key\n")
        wait_for(driver, lambda d: "did not accept" in by_id(d, "key-error").text,
                 "the refusal of a wrong key")
        by_id(driver, "key-input").send_keys("good-key-1234\n")
        wait_for(driver, lambda d: "Connected" in by_id(d, "server-state").text,
                 "the model list with the key")
        assert by_id(driver, "model").get_attribute("value") == "colors"
        assert by_id(driver, "key-input").get_attribute("value") == ""
        pick(driver, red)
        (card,) = settled(driver, 1)
        assert labels(card)[0][0] == "red", card.text
        curl = card.find_element("css selector", ".curl code").get_attribute("textContent")
        assert '-H "Authorization: Bearer $COROLLA_API_KEY"' in curl
        assert "good-key" not in curl  # the key never shows on the page
        wait_for(driver, lambda d: int(by_id(d, "ops").get_attribute("data-reads") or 0) >= 1,
                 "the metrics read with the key")
        # Kept for this tab's session, nowhere else.
        stored = driver.execute_script(
            "return [sessionStorage.getItem('corolla.apiKey'), localStorage.length,"
            " document.cookie]")
        assert stored == ["good-key-1234", 0, ""]
        driver.refresh()
        wait_for(driver, lambda d: "Connected" in by_id(d, "server-state").text,
                 "the model list after a reload")
        # Without the key the server refuses the upload, and the page says why.
        by_id(driver, "key-forget").click()
        pick(driver, red)
        (card,) = settled(driver, 1)
        assert card.get_attribute("data-state") == "error"
        assert "Failed (HTTP 401)" in card.text
        assert card.find_element("css selector", ".error").text == (
            "This server requires an API key: enter it above, then retry.")
    with chromium() as fresh:  # another browser session: asked again
        fresh.get(keyed.url + "/")
        wait_for(fresh, lambda d: by_id(d, "key-section").is_displayed(), "the key prompt")
        assert fresh.execute_script("return sessionStorage.length") == 0


# ---- readable errors --------------------------------------------------------------------------


def noisy_jpeg(path: Path, size: int = 300) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
        path, "JPEG", quality=95)
    return path


def test_loading_model_413_and_429(start_corolla: StartCorolla, tmp_path: Path) -> None:
    write_demo_version(tmp_path / "colors", 1, size=16)
    # A version whose loads fail and are retried (a minute apart) stays LOADING meanwhile.
    write_fake_version(tmp_path / "slow", 1, fail="weights are still being copied")
    cfg = tmp_path / "models.config"
    cfg.write_text(
        'model_config_list { config { name: "colors" base_path: "colors" } '
        'config { name: "slow" base_path: "slow" } }\n')
    server = start_corolla(f"--model_config_file={cfg}", "--max_request_body_bytes=30000",
                           "--max_concurrent_requests=1", fake_runtime=True,
                           wait_for=("colors",))
    red = solid_photo(tmp_path / "red.jpg", "red")
    big = noisy_jpeg(tmp_path / "big.jpg")
    assert big.stat().st_size > 30000
    with chromium() as driver:
        open_page(driver, server.url, "slow")
        assert "LOADING" in by_id(driver, "models").text
        assert "weights are still being copied" in by_id(driver, "models").text
        pick(driver, red)
        (card,) = settled(driver, 1)
        assert card.find_element("css selector", ".error").text == (
            "Model slow is still loading. Retry in a few seconds.")
        open_page(driver, server.url, "colors")
        pick(driver, big)
        (card,) = settled(driver, 1)
        assert card.find_element("css selector", ".error").text == (
            "“big.jpg” is larger than this server accepts (at most 29.3 KiB per request). "
            "Send a smaller photo.")
        # One request in flight fills the server (--max_concurrent_requests=1): its body
        # never comes. The page's upload meanwhile gets 429, then works on retry.
        with socket.create_connection(("127.0.0.1", server.rest_port)) as hold:
            hold.sendall(b"POST /v1/models/colors:predict HTTP/1.1\r\nhost: x\r\n"
                         b"content-type: image/jpeg\r\ncontent-length: 1000\r\n\r\n")
            server.wait_until(lambda: _inflight(server) == 1, "the held request")
            pick(driver, red)
            (card,) = settled(driver, 1)
            assert card.find_element("css selector", ".error").text == (
                "The server is busy: too many requests at once. Wait a moment, then retry.")
            shoot(driver, "errors")
        server.wait_until(lambda: _inflight(server) == 0, "the held request to end")
        card.find_element("css selector", "button").click()  # Retry
        (card,) = settled(driver, 1)
        assert labels(card)[0][0] == "red", card.text


def _inflight(server: CorollaProcess) -> float:
    text = server.get("/metrics").text
    m = re.search(r'^corolla_inflight_requests\{entrypoint="REST"\} (\S+)$', text, re.M)
    assert m is not None
    return float(m.group(1))
