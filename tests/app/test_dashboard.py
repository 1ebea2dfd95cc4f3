"""/admin: who may open it, the list (filters, sorting, live status), a finished search's page (its
curve, channel bars and downloads), and the cancel / retry forms."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from app.dashboard.auth import COOKIE, csrf_token

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def browser(app, tokens) -> TestClient:
    """A client that logged in through the form, so it holds the dashboard cookie and no bearer header."""
    client = TestClient(app, follow_redirects=False)
    response = client.post("/admin/login", data={"token": tokens["admin"], "next": "/admin?status=succeeded"})
    assert response.status_code == 303 and response.headers["location"] == "/admin?status=succeeded"
    return client


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", html, re.S)]


def row_ids(html: str) -> list[str]:
    return re.findall(r'data-search-id="([0-9a-f]+)"', html)


def test_without_credentials_a_browser_is_sent_to_the_login_form(app):
    client = TestClient(app, follow_redirects=False)
    response = client.get("/admin/searches/abc", params={"x": "1"})
    assert (
        response.status_code == 303 and response.headers["location"] == "/admin/login?next=/admin/searches/abc%3Fx%3D1"
    )
    form = client.get(response.headers["location"])
    assert form.status_code == 200 and 'name="next" value="/admin/searches/abc?x=1"' in form.text


def test_tokens_are_checked_as_in_the_api(app, alice, tokens):
    assert alice.get("/admin").status_code == 403
    assert TestClient(app, headers={"Authorization": "Bearer nope"}).get("/admin").status_code == 401
    client = TestClient(app, follow_redirects=False)
    assert client.post("/admin/login", data={"token": tokens["alice"]}).status_code == 403
    assert client.post("/admin/login", data={"token": "as_wrong"}).status_code == 401
    assert COOKIE not in client.cookies
    offsite = client.post("/admin/login", data={"token": tokens["admin"], "next": "https://evil.example/"})
    assert offsite.headers["location"] == "/admin"


def test_login_sets_an_http_only_strict_cookie_for_the_dashboard_only(app, tokens):
    response = TestClient(app, follow_redirects=False).post("/admin/login", data={"token": tokens["admin"]})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/admin" in cookie


def test_the_cookie_holds_a_session_not_the_api_token(app, tokens):
    client = TestClient(app, follow_redirects=False)
    client.post("/admin/login", data={"token": tokens["admin"]})
    cookie = client.cookies[COOKIE]
    assert cookie != tokens["admin"] and tokens["admin"] not in cookie
    assert client.get("/admin").status_code == 200
    as_bearer = TestClient(app, headers={"Authorization": f"Bearer {cookie}"})
    assert as_bearer.get("/searches").status_code == 401  # a session is no API token
    assert as_bearer.get("/admin").status_code == 401


def test_logout_revokes_the_session_and_a_copied_cookie_stops_working(app, tokens):
    client = TestClient(app, follow_redirects=False)
    client.post("/admin/login", data={"token": tokens["admin"]})
    copy = TestClient(app, follow_redirects=False, cookies={COOKIE: client.cookies[COOKIE]})
    assert copy.get("/admin").status_code == 200
    assert client.post("/admin/logout").status_code == 303
    refused = copy.get("/admin")
    assert refused.status_code == 303 and refused.headers["location"].startswith("/admin/login")


def test_a_session_expires(app, tokens):
    from sqlalchemy import update

    from app.auth import hash_token
    from store.db import session_scope
    from store.tables import AdminSession, utcnow

    client = TestClient(app, follow_redirects=False)
    client.post("/admin/login", data={"token": tokens["admin"]})
    assert client.get("/admin").status_code == 200
    with session_scope(app.state.engine) as session:
        session.execute(
            update(AdminSession)
            .where(AdminSession.id == hash_token(client.cookies[COOKIE]))
            .values(expires_at=utcnow())
        )
    assert client.get("/admin").status_code == 303


def test_the_list_shows_the_finished_search_with_its_best_accuracy_per_budget(browser, finished_search):
    page = browser.get("/admin", params={"status": "succeeded"})
    assert page.status_code == 200
    row = re.search(rf'<tr class="search-row" data-search-id="{finished_search["id"]}".*?</tr>', page.text, re.S).group(
        0
    )
    assert 'data-status="succeeded"' in row and "resnet18" in row and "digits" in row and "root" in row
    for budget in finished_search["results"]:
        label = f"{budget['target'] / 1e6:.3g}M MACs"
        assert f"{label}: {budget['val_accuracy']:.2f}%" in row
    assert re.search(r"<td>\d+ (s|min \d\d s)</td>", row), "the duration"


def test_filters_and_sorting(browser, admin, alice, finished_search, valid):
    """Checked against each listed search's own record over every page, so searches other test modules
    left in the session's database (whatever ran first) neither break nor weaken it."""
    queued = alice.post("/searches", json=valid).json()["id"]  # mobilenet_v2, never started
    known = {queued, finished_search["id"]}

    def listed(**params: str) -> list[str]:
        ids: list[str] = []
        while page := row_ids(browser.get("/admin", params={**params, "offset": len(ids)}).text):
            ids += page  # every page, however many searches the session holds
        records = {i: admin.get(f"/searches/{i}").json() for i in ids}
        for field in ("status", "owner", "arch"):  # every row shown matches the filter
            assert field not in params or all(r[field] == params[field] for r in records.values()), field
        assert "dataset" not in params or all(params["dataset"] in r["dataset"] for r in records.values())
        return [i for i in ids if i in known]

    everything = listed()
    assert everything == [queued, finished_search["id"]]  # newest first
    assert listed(status="failed") == []
    assert listed(owner="root") == [finished_search["id"]]
    assert listed(arch="resnet18") == [finished_search["id"]]
    assert listed(dataset="igit", arch="resnet18") == [finished_search["id"]]
    assert listed(sort="arch", order="asc") == [queued, finished_search["id"]]  # mobilenet_v2 < resnet18
    assert listed(sort="arch", order="desc") == [finished_search["id"], queued]
    for order in ("asc", "desc"):  # only finished searches have a duration; the rest sort after them
        assert listed(sort="duration", order=order) == [finished_search["id"], queued]
    assert browser.get("/admin", params={"sort": "bogus"}).status_code == 422


def test_budgets_given_as_shares_are_shown_as_shares(browser, alice, valid):
    queued = alice.post("/searches", json={**valid, "macs": ["40%", "2M"], "params": ["50%"]}).json()["id"]
    row = re.search(rf'<tr class="search-row" data-search-id="{queued}".*?</tr>', browser.get("/admin").text, re.S)
    assert "40% MACs, 2M MACs, 50% params" in row.group(0)
    assert "budgets 40% MACs, 2M MACs, 50% params;" in browser.get(f"/admin/searches/{queued}").text


def test_the_search_page_draws_the_trajectory_and_marks_each_budget(browser, admin, finished_search):
    page = browser.get(f"/admin/searches/{finished_search['id']}")
    assert page.status_code == 200
    curve = svgs(page.text)[0]
    steps = admin.get(f"/searches/{finished_search['id']}/trajectory").json()["steps"]
    points = curve.findall(f".//{SVG}circle[@class='point trajectory-point']")
    assert [(float(p.get("data-macs")), float(p.get("data-accuracy"))) for p in points] == [
        (s["macs"], s["accuracy"]) for s in sorted(steps, key=lambda s: s["macs"])
    ]
    chosen = curve.findall(f".//{SVG}circle[@class='point chosen-point']")
    rings = sorted((float(c.get("data-macs")), float(c.get("data-accuracy"))) for c in chosen)
    assert rings == sorted((b["macs"], b["val_accuracy"]) for b in finished_search["results"])
    for budget in finished_search["results"]:  # each grew from the first step under its budget (fill only widens)
        start = max((s for s in steps if s["macs"] <= budget["target"]), key=lambda s: s["macs"])
        assert start["macs"] <= budget["macs"] <= budget["target"]
    assert "succeeded" in page.text and "budgets answered" in page.text  # the event log


def test_channel_bars_show_each_chosen_configuration_against_the_full_width(browser, admin, finished_search):
    page = browser.get(f"/admin/searches/{finished_search['id']}")
    bars = svgs(page.text)[1:]
    assert len(bars) == len(finished_search["results"])
    full = finished_search["summary"]["channels"]
    for svg, budget in zip(bars, finished_search["results"]):
        config = admin.get(budget["config"]).json()
        layers = svg.findall(f".//{SVG}g[@class='layer']")
        assert [g.get("data-layer") for g in layers] == list(full)
        assert {g.get("data-layer"): int(g.get("data-channels")) for g in layers} == config["channels"]
        assert all(int(g.get("data-channels")) <= int(g.get("data-full")) for g in layers)
        assert any(int(g.get("data-channels")) < int(g.get("data-full")) for g in layers)  # it did slim


def test_download_links_serve_the_config_and_each_model_format(browser, admin, finished_search):
    page = browser.get(f"/admin/searches/{finished_search['id']}").text
    links = re.findall(r'<a href="(/admin/searches/[^"]+)" download>', page)
    assert len(links) == 4 * len(finished_search["results"])  # config, pt, onnx, torchscript each
    budget = finished_search["results"][0]
    target = f"macs={budget['target']:.12g}"
    config = browser.get(next(link for link in links if "/config?" in link and target in link))
    assert config.json() == admin.get(budget["config"]).json()
    pt = next(link.replace("&amp;", "&") for link in links if "format=pt" in link and target in link)
    assert (
        browser.get(pt).content
        == admin.get(
            f"/searches/{finished_search['id']}/model", params={"macs": f"{budget['target']:g}", "format": "pt"}
        ).content
    )


def test_live_endpoints_report_status_and_progress(browser, finished_search):
    live = browser.get(f"/admin/searches/{finished_search['id']}/live").json()
    assert live["status"] == "succeeded" and live["percent"] == 100.0 and live["phase"] == "done"
    listed = browser.get("/admin/status", params={"ids": finished_search["id"]}).json()
    assert listed[finished_search["id"]]["status"] == "succeeded"
    assert browser.get("/admin/static/live.js").headers["content-type"].startswith("text/javascript")
    assert browser.get("/admin/static/..%2Fauth.py").status_code == 404


def test_cancel_and_retry_forms_need_the_login_form_token(browser, alice, tokens, valid):
    queued = alice.post("/searches", json=valid).json()["id"]
    back = f"/admin/searches/{queued}"
    refused = browser.post(f"{back}/cancel", data={"back": back})
    assert refused.status_code == 403 and alice.get(back.replace("/admin", "")).json()["status"] == "queued"
    form = {"back": back, "csrf": csrf_token(browser.cookies[COOKIE])}
    assert f'name="csrf" value="{form["csrf"]}"' in browser.get(back).text
    done = browser.post(f"{back}/cancel", data=form)
    assert done.status_code == 303 and done.headers["location"].startswith(f"{back}?message=")
    assert alice.get(f"/searches/{queued}").json()["status"] == "cancelled"
    again = browser.post(f"{back}/cancel", data=form)  # nothing left to cancel: the page says why
    assert "only+queued+or+running" in again.headers["location"]
    assert browser.post(f"{back}/retry", data=form).status_code == 303
    assert alice.get(f"/searches/{queued}").json()["status"] == "queued"
    assert browser.post(f"{back}/delete", data=form).status_code == 404


def test_requested_budgets_are_labelled_whether_amounts_or_shares():
    from app.dashboard.queries import requested_labels
    from store.tables import Search

    search = Search(spec={"macs": ["40%", 2_000_000], "latency_ms": [1.5], "params": ["50%"]})
    assert requested_labels(search) == ["40% MACs", "2M MACs", "1.5 ms", "50% params"]
