"""The dashboard's pages through Flask's test client: what they show, where their links lead, that every
user-supplied value is escaped, and what the API token hides. The browser test drives the same pages
in Chromium (tests/test_dashboard_browser.py)."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser

import pytest
from conftest import SHIPPED_MODELS, TOKEN, service_config

import minigrad
from minigrad import Linear, Sequential
from service import create_app
from service.dashboard import byte_size, duration
from service.dashboard_charts import (
    CHART_HEIGHT,
    CHART_LEFT,
    CHART_RIGHT,
    CHART_WIDTH,
    architecture_summary,
    loss_chart,
    thinned,
)
from service.jobs import get_job_backend
from service.jobs.store import FAILED, LOST, RUNNING, SUCCEEDED, new_record
from service.registry import ModelRegistry, get_registry
from service.testing import free_port

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """The parts of a page the tests look at: links and resources, elements by id, and <path> data."""

    def __init__(self, html: str):
        super().__init__()
        self.urls, self.paths, self.elements = [], [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        for name in ("href", "src"):
            if name in attrs and tag != "path":
                self.urls.append(attrs[name])
        if tag == "path" and "data-series" in attrs:
            self.paths.append(attrs)

    def find(self, **wanted) -> list[dict]:
        return [attrs for _, attrs in self.elements if all(attrs.get(k) == v for k, v in wanted.items())]


def page(client, url: str, status: int = 200) -> tuple[str, Page]:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    return text, Page(text)


def points(d: str) -> int:
    return len(re.findall(r"[ML]-?\d", d))


def xor_document(**metadata) -> dict:
    document = json.loads((SHIPPED_MODELS / "xor.json").read_text())
    document["metadata"] = metadata
    return document


def add_job(app, status: str, epochs: int, losses: list[float], **fields) -> str:
    """A job record and its history written into the app's real job store."""
    with app.app_context():
        store = get_job_backend().store
        job_id = f"job{time.monotonic_ns()}"
        now = time.time()
        request = fields.pop("request", {"architecture": [{"type": "Linear", "in_features": 2, "out_features": 1}]})
        assert store.create(new_record(job_id, request, epochs, now=now - 5), max_active=100)
        history = [{"epoch": i + 1, "loss": loss, "val_loss": loss * 1.5} for i, loss in enumerate(losses)]
        store.append_history(job_id, history)
        store.update(job_id, status=status, started_at=now - 4, heartbeat_at=now, epoch=len(losses),
                     finished_at=now if status != RUNNING else None, **fields)
        return job_id


# ------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("name, summary, size", [
    ("xor", "2 → Linear 3 → Tanh → Linear 1 → Sigmoid", "13 parameters, 104 bytes"),
    ("iris", "4 → Linear 16 → Relu → Linear 3 → Softmax", "131 parameters, 1.0 KiB"),
])
def test_index_lists_each_model_with_architecture_size_dtype_and_links(client, name, summary, size):
    html, parsed = page(client, "/")
    row = html[html.index(f'<tr data-model="{name}">'):]
    row = row[:row.index("</tr>")]
    assert summary in row and size in row and "float64" in row
    assert f'href="/ui/models/{name}"' in row and f'href="/models/{name}/versions/1"' in row
    assert "/docs" in parsed.urls


def test_index_shows_metadata_shortened_and_the_model_page_in_full(client):
    html, _ = page(client, "/")
    assert "test_accuracy" not in html and "…" in html  # iris's long training record, cut short
    html, _ = page(client, "/ui/models/iris")
    assert "test_accuracy&#34;: 0.9333333333333333}" in html


@pytest.mark.parametrize("url", ["/", "/ui/models/xor", "/ui/models/iris?version=1"])
def test_every_link_and_resource_on_the_page_resolves_locally(client, url):
    _, parsed = page(client, url)
    assert parsed.urls
    for link in parsed.urls:
        assert link.startswith(("/", "#")), f"{link} is not served by the app (no CDN, works offline)"
        if link.startswith("/"):
            assert client.get(link.split("#")[0]).status_code == 200, link


def test_model_page_draws_the_architecture_and_offers_a_prediction_form(client):
    html, parsed = page(client, "/ui/models/xor")
    titles = re.findall(r'class="layer-title">([^<]+)<', html)
    assert titles == ["input", "Linear", "Tanh", "Linear", "Sigmoid", "output"]
    assert "2 → 3 · 9 params" in html and "3 → 1 · 4 params" in html
    (form,) = parsed.find(id="predict-form")
    assert (form["data-model"], form["data-version"], form["data-url"]) == ("xor", "1", "/predict")
    assert "[[0, 0]]" in html  # an example row of the model's input width


def test_a_one_input_model_is_described_in_the_singular(client, model_dir):
    minigrad.save(Sequential([Linear(1, 1)]), model_dir / "one.json")
    html, _ = page(client, "/ui/models/one")
    assert "rows of 1 number<" in html and "1 feature" in html and "1 value" in html
    assert "1 numbers" not in html and "1 features" not in html and "1 values" not in html


def test_model_page_shows_the_chosen_version(app, client):
    with app.app_context():
        get_registry().put("xor", xor_document(note="second"))
    html, _ = page(client, "/ui/models/xor")
    assert "<strong>v2</strong>" in html and "second" in html
    html, _ = page(client, "/ui/models/xor?version=1")
    assert "<strong>v1</strong>" in html and "second" not in html
    index, _ = page(client, "/")
    assert 'href="/models/xor/versions/1"' in index and 'href="/models/xor/versions/2"' in index


@pytest.mark.parametrize("url, status", [
    ("/ui/models/nope", 404),
    ("/ui/models/xor?version=9", 404),
    ("/ui/models/xor?version=x", 400),
    ("/ui/models/xor?version=0", 400),
    ("/ui/models/xor?version=%C2%B2", 400),  # "²": a digit to str.isdigit(), not to int(); it was a 500
    ("/ui/models/xor?version=%D9%A1", 400),  # "١" (Arabic-Indic one): it was read as version 1
    ("/ui/models/xor?version=" + "9" * 5000, 400),  # more digits than int() reads: it was a 500
    ("/ui/models/xor?version=01", 400),  # version 1 by another name, as /v2 refuses it
    ("/ui/models/a..b", 400),
    ("/ui/models/%3Cscript%3E", 400),
    ("/ui/jobs/nope", 404),
    ("/ui/jobs/nope/card", 404),
])
def test_bad_addresses_are_problems_not_pages(client, url, status):
    response = client.get(url)
    assert response.status_code == status
    # JSON that a browser must not sniff into HTML, even when it quotes the address back
    assert response.mimetype == "application/problem+json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_broken_model_file_is_shown_without_hiding_the_others(client, model_dir):
    (model_dir / "broken.json").write_text('{"format": "minigrad.sequential"')
    html, _ = page(client, "/")
    assert '<tr data-model="broken">' in html and "is not a valid model document" in html
    assert '<tr data-model="xor">' in html


# ------------------------------------------------------------------------------------------ escaping


def test_a_model_deleted_while_the_index_is_made_is_left_out(client, model_dir, monkeypatch):
    # A DELETE between the listing of names and a model's overview made the whole index page a 404.
    listed = ModelRegistry.names

    def names_then_a_delete_elsewhere(self):
        names = listed(self)
        ModelRegistry(model_dir).delete("iris")
        return names

    monkeypatch.setattr(ModelRegistry, "names", names_then_a_delete_elsewhere)
    response = client.get("/")
    assert response.status_code == 200
    assert "/ui/models/xor" in response.get_data(as_text=True)
    assert "/ui/models/iris" not in response.get_data(as_text=True)


def test_hostile_metadata_is_escaped_everywhere(app, client):
    with app.app_context():
        get_registry().put("evil", xor_document(**{HOSTILE: HOSTILE, "nested": {"k": HOSTILE}}))
    for url in ("/", "/ui/models/evil"):
        html, _ = page(client, url)
        assert "<script>" not in html and "<img" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html


def test_hostile_job_fields_are_escaped(app, client):
    job_id = add_job(app, "failed", 5, [0.5, 0.4], error=HOSTILE,
                     request={"model": HOSTILE, "save_as": HOSTILE})
    for url in ("/", f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/card"):
        html, _ = page(client, url)
        assert "<script>" not in html and "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_pages_forbid_inline_and_foreign_scripts(client):
    policy = client.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy


# ------------------------------------------------------------------------------------------ jobs


def test_a_finished_job_shows_status_progress_duration_loss_and_one_curve_point_per_epoch(app, client):
    losses = [0.9, 0.5, 0.3, 0.2, 0.15, 0.12, 0.11]
    job_id = add_job(app, SUCCEEDED, 7, losses, result={"final_loss": 0.11, "epochs_run": 7,
                                                        "registered": {"name": "xor", "version": 1}})
    html, parsed = page(client, "/")
    card = html[html.index(f'id="job-{job_id}"'):]
    card = card[:card.index("</article>")]
    assert 'data-status="succeeded"' in card and 'data-active="0"' in card
    assert '<progress value="7" max="7">' in card and "epoch 7 / 7" in card
    assert "loss 0.11" in card and "4.0 s" in card
    assert f'href="/jobs/{job_id}/model"' in card and 'href="/ui/models/xor?version=1"' in card
    assert "Cancel" not in card
    curves = {p["data-series"]: p["d"] for p in Page(card).paths}
    assert set(curves) == {"loss", "val_loss"}
    assert all(points(d) == len(losses) for d in curves.values())


def test_a_running_job_card_can_be_fetched_alone_to_refresh_itself(app, client):
    job_id = add_job(app, RUNNING, 10, [0.9, 0.8, 0.7])
    html, parsed = page(client, f"/ui/jobs/{job_id}/card")
    assert html.lstrip().startswith("<article") and html.rstrip().endswith("</article>")
    (card,) = parsed.find(id=f"job-{job_id}")
    assert (card["data-active"], card["data-epoch"], card["data-card-url"]) == ("1", "3", f"/ui/jobs/{job_id}/card")
    assert '<progress value="3" max="10">' in html
    (cancel,) = parsed.find(**{"data-method": "DELETE"})
    assert cancel["data-url"] == f"/jobs/{job_id}"
    assert [points(p["d"]) for p in parsed.paths] == [3, 3]


def test_a_job_without_epochs_has_no_curve_yet(app, client):
    job_id = add_job(app, RUNNING, 10, [])
    html, parsed = page(client, f"/ui/jobs/{job_id}")
    assert parsed.paths == [] and "No epoch finished yet" in html


def job_cards(html: str) -> list[str]:
    return re.findall(r'<article class="job [^"]*" id="job-([^"]+)"', html)


def test_the_jobs_can_be_shown_by_status_with_a_link_per_status(app, client):
    failed = add_job(app, FAILED, 3, [0.9], error="diverged")
    succeeded = [add_job(app, SUCCEEDED, 3, [0.9]) for _ in range(2)]
    lost = add_job(app, LOST, 3, [0.9])
    html, _ = page(client, "/")
    assert job_cards(html) == [lost, *succeeded[::-1], failed]
    nav = html[html.index('<nav class="job-filter"'):]
    nav = nav[:nav.index("</nav>")]
    link = r'<a (?:class="status-\w+" data-status="\w+" )?href="([^"]+)"( aria-current="page")?>([^<]+)</a>'
    links = re.findall(link, nav)
    assert links == [("/#jobs", ' aria-current="page"', "all 4"), ("/?status=queued#jobs", "", "queued 0"),
                     ("/?status=running#jobs", "", "running 0"), ("/?status=succeeded#jobs", "", "succeeded 2"),
                     ("/?status=failed#jobs", "", "failed 1"), ("/?status=cancelled#jobs", "", "cancelled 0"),
                     ("/?status=lost#jobs", "", "lost 1")]

    html, parsed = page(client, "/?status=succeeded")
    assert job_cards(html) == succeeded[::-1]
    (current,) = [attrs for _, attrs in parsed.elements if "aria-current" in attrs]
    assert current["data-status"] == "succeeded"
    assert job_cards(page(client, "/?status=failed,lost")[0]) == [lost, failed]
    assert "No running jobs." in page(client, "/?status=running")[0]


def test_more_jobs_of_a_status_than_shown_link_to_the_filtered_api_list(app, client):
    for _ in range(21):
        add_job(app, FAILED, 1, [0.5])
    add_job(app, SUCCEEDED, 1, [0.5])
    html, _ = page(client, "/?status=failed")
    assert len(job_cards(html)) == 20
    assert 'The 20 newest of 21 failed jobs; all of them: <a href="/jobs?status=failed">' in html


@pytest.mark.parametrize("query", ["status=bogus", "status=failed,", "status=Failed"])
def test_a_bad_status_on_the_dashboard_is_the_api_s_422(client, query):
    response = client.get(f"/?{query}")
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    (message,) = response.get_json()["errors"]["query"]["status"]
    assert "not a job status" in message and "queued, running, succeeded, failed, cancelled, lost" in message


def test_an_unreachable_queue_still_shows_the_models(model_dir, tmp_path):
    app = create_app(service_config(model_dir, tmp_path / "var", MINIGRAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    html, _ = page(app.test_client(), "/")
    assert "The job queue cannot be reached" in html and '<tr data-model="xor">' in html


def test_a_job_whose_consumer_died_shows_as_lost_on_its_own_page_and_card(model_dir, tmp_path):
    # The job page and the card a running job refreshes itself from did not reap: with its consumer
    # killed (and its reaper thread with it), the card showed "running" and polled for ever.
    app = create_app(service_config(model_dir, tmp_path / "var", MINIGRAD_HEARTBEAT_TIMEOUT=5))
    job_id = add_job(app, RUNNING, 10, [0.9, 0.8], worker="gone:123")
    with app.app_context():
        get_job_backend().store.update(job_id, heartbeat_at=time.time() - 6)
    for url in (f"/ui/jobs/{job_id}/card", f"/ui/jobs/{job_id}"):
        html, parsed = page(app.test_client(), url)
        (card,) = parsed.find(id=f"job-{job_id}")
        assert (card["data-status"], card["data-active"]) == ("lost", "0") and "gone:123" in html
        assert "Cancel" not in html


def test_a_job_page_with_the_queue_unreachable_is_a_503_problem(model_dir, tmp_path):
    app = create_app(service_config(model_dir, tmp_path / "var", MINIGRAD_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    for url in ("/ui/jobs/abc", "/ui/jobs/abc/card"):
        response = app.test_client().get(url)
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert response.get_json()["type"] == "urn:minigrad:problem:queue-unavailable"


@pytest.mark.parametrize("epochs, expected_last_x", [(3, CHART_WIDTH - 12), (6, None)])
def test_loss_chart_geometry(epochs, expected_last_x):
    history = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}, {"epoch": 3, "loss": 0.0, "val_loss": 1.0}]
    chart = loss_chart(history, epochs)
    training, validation = chart.series
    coordinates = [tuple(map(float, pair.split(","))) for pair in re.findall(r"[\d.]+,[\d.]+", training.path)]
    left, top, right, bottom = chart.frame
    assert [y for _, y in coordinates] == [top, (top + bottom) / 2, bottom]  # 2 at the top, 0 at the bottom
    assert coordinates[0][0] == left
    if expected_last_x is not None:
        assert coordinates[-1][0] == expected_last_x
    else:  # a running job: the curve so far covers part of the x axis
        assert left < coordinates[-1][0] < right
    assert validation.points == 1 and validation.last == 1.0
    assert 0 < bottom <= CHART_HEIGHT


@pytest.mark.parametrize("losses, logarithmic, middle_tick", [
    ([100.0, 10.0, 1.0], True, "10"),  # two decades: equal steps in log10
    ([2.0, 1.0, 0.04], False, "1.02"),  # less than two decades: linear
])
def test_loss_chart_goes_logarithmic_over_two_decades(losses, logarithmic, middle_tick):
    chart = loss_chart([{"epoch": i + 1, "loss": v} for i, v in enumerate(losses)], 3)
    assert chart.logarithmic is logarithmic
    assert [label for _, label in chart.y_ticks] == [f"{losses[0]:.3g}", middle_tick, f"{losses[-1]:.3g}"]
    ys = [float(y) for y in re.findall(r",([\d.]+)", chart.series[0].path)]
    left, top, right, bottom = chart.frame
    assert ys[0] == top and ys[-1] == bottom
    assert (ys[1] == (top + bottom) / 2) is logarithmic


def test_loss_chart_without_epochs_and_with_a_flat_loss():
    assert loss_chart([], 10) is None
    (flat,) = loss_chart([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.5}], 2).series
    assert len(set(re.findall(r",([\d.]+)", flat.path))) == 1


PIXELS = CHART_WIDTH - CHART_LEFT - CHART_RIGHT  # columns of the drawing area
BOUND = 2 * PIXELS  # points a curve draws as they are


def coordinates(path: str) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in re.findall(r"[ML]([\d.]+,[\d.]+)", path)]


def spiky_history(epochs: int) -> list[dict]:
    """A decaying loss with a spike, a dip below everything, and a last epoch above its neighbours."""
    history = [{"epoch": e, "loss": 1 / e + 0.001 * (e % 7), "val_loss": 2 / e} for e in range(1, epochs + 1)]
    history[epochs // 3]["loss"] = 50.0
    history[epochs // 2]["loss"] = 1e-6
    history[-1]["loss"] = 0.5
    return history


@pytest.mark.parametrize("epochs, running_to", [(100_000, 100_000), (BOUND + 1, BOUND + 1), (30_000, 100_000)])
def test_a_long_history_draws_a_bounded_curve_keeping_its_extremes_and_last_point(epochs, running_to):
    history = spiky_history(epochs)
    chart = loss_chart(history, running_to)
    training = chart.series[0]
    drawn = coordinates(training.path)
    assert len(drawn) == training.points <= BOUND + 2 and training.epochs == epochs
    xs = [x for x, _ in drawn]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # in epoch order, each epoch once
    left, top, right, bottom = chart.frame
    ys = [y for _, y in drawn]
    assert min(ys) == top and max(ys) == bottom  # the spike (50) and the dip (1e-6) are both drawn
    first_x = left
    last_x = left + (epochs - 1) / (running_to - 1) * (right - left)
    assert drawn[0][0] == first_x and drawn[-1][0] == pytest.approx(last_x, abs=0.005)
    assert training.last == 0.5
    # Every pixel column the curve crosses keeps its lowest and highest loss.
    losses = [(r["epoch"], r["loss"]) for r in history]
    column = {e: min(int((e - 1) / (running_to - 1) * PIXELS), PIXELS - 1) for e, _ in losses}
    kept = thinned(losses, column.get, PIXELS)
    for c in set(column.values()):
        values = [v for e, v in losses if column[e] == c]
        assert {min(values), max(values)} <= {v for e, v in kept if column[e] == c}
    assert kept[-1] == losses[-1] and kept[0] == losses[0]


@pytest.mark.parametrize("epochs", [1, 7, BOUND])
def test_a_history_within_the_bound_is_drawn_one_point_per_epoch(epochs):
    history = spiky_history(epochs) if epochs > 2 else [{"epoch": 1, "loss": 1.0}]
    losses = [(r["epoch"], r["loss"]) for r in history]
    assert thinned(losses, lambda e: 0, PIXELS) == losses
    chart = loss_chart(history, epochs)
    (training, *_) = chart.series
    left, _, right, _ = chart.frame
    last = max(epochs, 2)
    assert training.points == training.epochs == epochs
    assert [f"{x:.2f}" for x, _ in coordinates(training.path)] == [
        f"{left + (e - 1) / (last - 1) * (right - left):.2f}" for e in range(1, epochs + 1)]


def test_the_page_of_a_job_with_100_000_epochs_stays_small(app, client):
    history = spiky_history(100_000)
    job_id = add_job(app, SUCCEEDED, 100_000, [r["loss"] for r in history])
    for url in (f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/card", "/"):
        html, parsed = page(client, url)
        assert len(html.encode()) < 40_000, url  # 3 MB when every epoch was drawn
        assert [int(p["data-points"]) for p in parsed.paths] == [points(p["d"]) for p in parsed.paths]
        assert all(points(p["d"]) <= BOUND + 2 for p in parsed.paths)


@pytest.mark.parametrize("count, shown", [(104, "104 bytes"), (1048, "1.0 KiB"), (3 * 1024**2, "3.0 MiB")])
def test_byte_size(count, shown):
    assert byte_size(count) == shown


@pytest.mark.parametrize("seconds, shown", [
    (None, "–"), (0.0421, "42 ms"), (4.04, "4.0 s"), (75.2, "1 min 15 s"), (7260, "2 h 1 min"),
])
def test_duration(seconds, shown):
    assert duration(seconds) == shown


def test_architecture_summary():
    layers = [{"type": "Linear", "in_features": 2, "out_features": 3}, {"type": "Tanh"},
              {"type": "Linear", "in_features": 3, "out_features": 1}, {"type": "Sigmoid"}]
    assert architecture_summary(layers, 2) == "2 → Linear 3 → Tanh → Linear 1 → Sigmoid"


# ------------------------------------------------------------------------------------------ the token


def write_buttons(parsed: Page) -> list[dict]:
    return parsed.find(**{"data-method": "DELETE"})


def test_without_a_token_configured_write_actions_show_and_nothing_asks(app, client):
    add_job(app, RUNNING, 10, [0.5])
    html, parsed = page(client, "/")
    buttons = write_buttons(parsed)
    assert len(buttons) == 3 and not any("hidden" in b for b in buttons)  # two models, one job
    assert not parsed.find(id="token-form")
    checked = client.get("/ui/token")
    assert checked.status_code == 204 and checked.data == b"" and "Content-Type" not in checked.headers


def test_with_a_token_write_actions_wait_for_it_and_reading_needs_none(protected_app):
    client = protected_app.test_client()
    add_job(protected_app, RUNNING, 10, [0.5])
    _, parsed = page(client, "/")
    buttons = write_buttons(parsed)
    assert len(buttons) == 3 and all("hidden" in b for b in buttons)
    assert parsed.find(id="token-form")
    _, model = page(client, "/ui/models/xor")
    (submit,) = model.find(id="predict-submit")
    assert "hidden" not in submit  # predictions are not protected: the form works without a token


@pytest.mark.parametrize("header, status", [
    (None, 401),
    ("Bearer wrong", 401),
    ("Basic " + TOKEN, 401),
    ("Bearer " + TOKEN, 204),
])
def test_token_check(protected_app, header, status):
    headers = {"Authorization": header} if header else {}
    response = protected_app.test_client().get("/ui/token", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.mimetype == "application/problem+json"


def test_protected_predictions_make_the_form_ask_for_the_token(model_dir, tmp_path):
    app = create_app(service_config(model_dir, tmp_path / "var", MINIGRAD_API_TOKEN=TOKEN,
                                    MINIGRAD_PROTECT_PREDICT=True))
    html, parsed = page(app.test_client(), "/ui/models/xor")
    (submit,) = parsed.find(id="predict-submit")
    assert "hidden" in submit and "needs-token" in submit["class"] and "Predictions need the API token" in html
