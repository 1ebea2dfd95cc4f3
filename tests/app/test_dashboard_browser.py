"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against the app
served by uvicorn.  Log in with the form, find the finished search in the list, open its page, and
count the chart's points; screenshots go to tests/_artifacts/."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from engine.width_scores import BASELINE_POINTS
from worker.claims import ProgressWriter, claim
from worker.results import store_cancelled

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "_artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def base_url(app) -> Iterator[str]:
    """The session's app on a real socket, in a thread of this process (same database, same broker)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def page(base_url) -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.errors = []
        page.on("pageerror", lambda err: page.errors.append(str(err)))
        page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
        yield page
        browser.close()


def log_in(page, base_url: str, token: str, path: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base_url}{path}")
    assert page.url.startswith(f"{base_url}/admin/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{path}")


def test_a_finished_search_in_the_list_and_its_chart_in_the_browser(page, base_url, tokens, admin, finished_search):
    ARTIFACTS.mkdir(exist_ok=True)
    log_in(page, base_url, tokens["admin"], "/admin")

    row = page.locator(f"tr[data-search-id='{finished_search['id']}']")
    assert row.get_attribute("data-status") == "succeeded"
    assert row.locator("[data-field=status]").inner_text() == "succeeded"
    assert row.locator(".budget-accuracy").count() == len(finished_search["results"])
    page.screenshot(path=str(ARTIFACTS / "dashboard-list.png"), full_page=True)

    row.locator("a").first.click()
    page.wait_for_url(f"{base_url}/admin/searches/{finished_search['id']}")
    steps = admin.get(f"/searches/{finished_search['id']}/trajectory").json()["steps"]
    curve = page.locator("#curve svg")
    assert curve.locator("circle.trajectory-point").count() == len(steps) > 1
    assert curve.locator("circle.chosen-point").count() == len(finished_search["results"])
    assert curve.locator(".baseline-point").count() == BASELINE_POINTS  # the uniform-width baseline
    box = curve.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 150  # laid out, not collapsed
    first = curve.locator("circle.trajectory-point").first.bounding_box()
    assert box["x"] <= first["x"] <= box["x"] + box["width"] and box["y"] <= first["y"] <= box["y"] + box["height"]
    assert page.locator("figure.channels svg").count() == len(finished_search["results"])
    shot = ARTIFACTS / "dashboard-search.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.errors == []


def test_a_running_search_updates_in_place_and_the_page_reloads_when_it_ends(page, base_url, app, tokens, alice, valid):
    """Progress written the way a worker writes it (a claim and its `ProgressWriter`) reaches the open
    page through its polling script, without a reload; the end of the search reloads the page."""
    search_id = alice.post("/searches", json=valid).json()["id"]
    held = claim(app.state.engine, search_id, "browser-test")
    write = ProgressWriter(held, every_s=0.0, heartbeat_s=60.0)
    try:
        write({"phase": "train", "percent": 10.0, "epoch": 1, "epochs": 3, "eta_s": 125.0})
        log_in(page, base_url, tokens["admin"], f"/admin/searches/{search_id}")
        live = page.locator("#live")
        assert live.locator("[data-field=epoch]").inner_text() == "1 / 3"
        page.evaluate("window.notReloaded = true")
        write({"phase": "train", "percent": 40.0, "epoch": 2, "epochs": 3, "eta_s": 65.0})
        page.wait_for_function(
            "document.querySelector('#live [data-field=epoch]').textContent === '2 / 3'", timeout=15_000
        )
        assert live.locator("[data-field=eta]").inner_text() == "1 min 05 s"
        assert live.locator("[data-field=percent]").inner_text() == "40.0%"
        assert page.evaluate("window.notReloaded") is True
    finally:
        store_cancelled(held, "train")  # a search left running would skew the other tests' figures
    page.wait_for_function("document.querySelector('#live').dataset.status === 'cancelled'", timeout=15_000)
    assert page.locator("form.action button.retry").count() == 1
    assert page.errors == []
