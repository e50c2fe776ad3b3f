"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright, against
gunicorn and a Huey consumer running as their own processes, with a finished and a running job."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import requests
from jobs_support import XOR_INPUTS, XOR_TARGETS, WorkerProcess, job_env, slow_request, wait_for, xor_request

from service.testing import GunicornServer

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("the dashboard's browser test needs Debian's chromium at /usr/bin/chromium; enable it with "
                "`sudo apt-get install -y chromium` (.ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the `playwright` package "
                               "(in the test extra: pip install -e '.[test]'); it drives /usr/bin/chromium, so "
                               "`playwright install` is not needed")

expect = sync_api.expect  # waits without evaluating strings, which the pages' CSP forbids
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"
TOKEN = "browser-test-token"
FINISHED_EPOCHS = 300


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before a cancel or delete
    yield page
    context.close()


def model_env(tmp_path: Path, **extra) -> dict:
    (tmp_path / "models").mkdir()
    for name in ("xor.json", "iris.json"):
        shutil.copy(SHIPPED_MODELS / name, tmp_path / "models" / name)
    return job_env(tmp_path, MINIGRAD_POLL_INTERVAL=0.05, **extra)


def path_points(d: str) -> int:
    """How many points an SVG path's data holds (one M or L command each)."""
    return len(re.findall(r"[ML]-?\d", d))


def api_job(server, job_id) -> dict:
    response = requests.get(f"{server.url}/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_dashboard_with_a_finished_and_a_running_job(tmp_path, page):
    env = model_env(tmp_path)
    server = GunicornServer(env=env, workers=2).start()
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        finished = requests.post(f"{server.url}/train?wait=20", timeout=30, json=xor_request(
            epochs=FINISHED_EPOCHS, save_as="xor-dashboard",
            validation={"inputs": XOR_INPUTS, "targets": XOR_TARGETS})).json()
        assert finished["status"] == "succeeded", finished
        running = requests.post(f"{server.url}/train", json=slow_request(), timeout=10).json()
        wait_for(lambda: api_job(server, running["id"])["progress"]["epoch"] >= 1, 30, what="the slow job to start")

        page.goto(server.url + "/")
        done = page.locator(f"#job-{finished['id']}")
        assert done.get_attribute("data-status") == "succeeded"
        for series in ("loss", "val_loss"):
            d = done.locator(f"svg.loss-chart path[data-series={series}]").get_attribute("d")
            assert path_points(d) == FINISHED_EPOCHS, series  # one point per epoch
        assert done.locator(".epochs").inner_text() == f"epoch {FINISHED_EPOCHS} / {FINISHED_EPOCHS}"
        assert done.locator(".final-loss").inner_text() == f"loss {finished['result']['final_loss']:.4g}"

        # The running job's card refreshes itself: its epoch and its curve grow without a reload.
        live = page.locator(f"#job-{running['id']}")
        assert live.get_attribute("data-status") == "running"
        first_epoch = int(live.get_attribute("data-epoch"))
        wait_for(lambda: int(live.get_attribute("data-epoch")) > first_epoch, 15, what="the card to refresh")
        assert path_points(live.locator("path[data-series=loss]").get_attribute("d")) >= 1
        assert 0 < int(live.locator("progress").get_attribute("value")) < 10_000
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        # The trained model's page: its diagram, and a prediction through the form.
        page.locator("tr[data-model=xor-dashboard] a.model-link").click()
        page.wait_for_url("**/ui/models/xor-dashboard")
        assert page.locator("svg.architecture-diagram g.layer").count() == 6  # input, 4 layers, output
        page.fill("#predict-inputs", "[[0, 1], [1, 1]]")
        page.click("#predict-form button[type=submit]")
        expect(page.locator("#predict-result")).to_have_class("ok")
        shown = page.locator("#predict-result").inner_text()
        expected = requests.post(f"{server.url}/predict", timeout=10,
                                 json={"model": "xor-dashboard", "inputs": [[0, 1], [1, 1]]}).json()["outputs"]
        assert shown == str(expected).replace(" ", "")  # JSON.stringify of the same floats
        page.screenshot(path=str(tmp_path / "model.png"), full_page=True)

        # A status link shows that status's jobs only.
        page.goto(server.url + "/")
        page.locator("nav.job-filter a[data-status=succeeded]").click()
        page.wait_for_url("**/?status=succeeded#jobs")
        assert page.locator("article.job").count() == 1 and page.locator(f"#job-{finished['id']}").is_visible()
        assert page.locator("nav.job-filter a[aria-current=page]").inner_text() == "succeeded 1"

        # Back on the dashboard, the running job is cancelled with its button.
        page.goto(server.url + "/")
        page.locator(f"#job-{running['id']} button[data-method=DELETE]").click()
        wait_for(lambda: api_job(server, running["id"])["status"] == "cancelled", 30, what="the cancel")
    finally:
        worker.stop()
        server.stop()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def test_token_unlocks_write_actions_and_protected_predictions(tmp_path, page):
    env = model_env(tmp_path, MINIGRAD_API_TOKEN=TOKEN, MINIGRAD_PROTECT_PREDICT=1)
    with GunicornServer(env=env, workers=1) as server:
        page.goto(server.url + "/ui/models/xor")
        delete = page.locator("button[data-method=DELETE]")
        predict = page.locator("#predict-form button[type=submit]")
        assert not delete.is_visible() and not predict.is_visible()
        assert page.locator("#predict-form .token-prompt").is_visible()

        page.fill("#token-form input[name=token]", "wrong")
        page.click("#token-form button[type=submit]")
        expect(page.locator(".token-message")).to_have_text("token not accepted")
        assert not delete.is_visible() and not predict.is_visible()

        page.fill("#token-form input[name=token]", TOKEN)
        page.click("#token-form button[type=submit]")
        delete.wait_for(state="visible")
        page.click("#predict-form button[type=submit]")
        expect(page.locator("#predict-result")).to_have_class("ok")

        page.reload()  # the token is kept for the session
        delete.wait_for(state="visible")
        page.click("#token-forget")
        assert not delete.is_visible()


def test_a_running_job_card_keeps_following_through_a_queue_outage(tmp_path, page):
    # The card stopped refreshing itself at the first answer that was not ok: a 503 while Redis restarted
    # (or a refused connection while gunicorn did) froze it as "running" until the page was reloaded.
    from service.jobs.backend import JobBackend
    from service.jobs.settings import JobSettings
    from service.jobs.store import RUNNING, SUCCEEDED, new_record

    env = model_env(tmp_path)
    store = JobBackend(JobSettings(data_dir=tmp_path / "var", model_dir=tmp_path / "models")).store
    store.create(new_record("outage", {"architecture": [{"type": "Linear", "in_features": 2, "out_features": 1}]},
                            10), max_active=10)
    store.update("outage", status=RUNNING, started_at=time.time(), heartbeat_at=time.time() + 3600, epoch=3)
    server = GunicornServer(env=env, workers=1).start()
    try:
        refusals = []

        def queue_down(route):  # the next two refreshes meet the queue down, then it is back
            if len(refusals) < 2:
                refusals.append(route.request.url)
                return route.fulfill(status=503, content_type="application/problem+json", body="{}")
            return route.continue_()

        page.route("**/ui/jobs/outage/card", queue_down)
        page.goto(server.url + "/")
        # page.wait_for_timeout, not sleep: Playwright calls the route handler while the page is waited on.
        wait_for(lambda: page.wait_for_timeout(50) or len(refusals) == 2, 15, what="two refreshes refused")
        store.update("outage", status=SUCCEEDED, finished_at=time.time(), epoch=10)
        expect(page.locator("#job-outage")).to_have_attribute("data-status", "succeeded", timeout=10_000)
    finally:
        server.stop()
