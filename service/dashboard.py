"""The web dashboard: registered models, training jobs and their loss curves, server-rendered.

``GET /`` lists everything (``?status=``, as GET /jobs takes it, keeps only those jobs);
``GET /ui/models/<name>`` draws one model and offers a prediction form; ``GET /ui/jobs/<id>`` shows
one job, and ``/ui/jobs/<id>/card`` is the fragment a running job's card reloads itself from. Pages
are Jinja templates (autoescaped: names, metadata and errors come from users) with plain CSS and one
small script, all shipped in the package: no CDN, works offline.

Reading needs no token. Write actions (delete a model, cancel a job) call the JSON API with the
bearer token the page keeps in ``sessionStorage``; with ``MINIGRAD_API_TOKEN`` set they stay hidden
until a token that ``/ui/token`` accepts has been entered. The pages never see the token themselves.
"""

from __future__ import annotations

import json
import sqlite3

from flask import Blueprint, Response, current_app, render_template, request
from redis.exceptions import RedisError

from .api import Blueprint as ApiBlueprint
from .auth import check_token
from .dashboard_charts import architecture_diagram, architecture_summary, loss_chart
from .errors import abort_problem
from .jobs import get_job_backend, housekeeping_on_read
from .jobs.schemas import JobFilterArgsSchema
from .jobs.store import ACTIVE, STATUSES
from .registry import InvalidModelFile, ModelNotFound, ModelRegistry, VersionNotFound, get_registry
from .schemas import version_in_url
from .train_api import job_view, queue_unavailable

blp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
                static_url_path="/ui/static")

JOBS_SHOWN = 20

# Scripts and styles only from this origin: even a value that slipped past escaping could not run.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


@blp.after_request
def _security_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.context_processor
def _template_context():
    """What the page must ask for (the token before write actions, and before predictions when protected),
    and the helpers the templates call."""
    token_required = current_app.config["MINIGRAD_API_TOKEN"] is not None
    return {"token_required": token_required,
            "predict_needs_token": token_required and current_app.config["MINIGRAD_PROTECT_PREDICT"],
            "shortened": shortened}


# ---------------------------------------------------------------------------------------- formatting


def byte_size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024**2:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024**2:.1f} MiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


METADATA_SHORT = 120  # characters of a metadata value in the models table (the model page shows all)


def shown_value(value) -> str:
    """A metadata value as text: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def shortened(text: str, limit: int = METADATA_SHORT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------- models


def model_overview(registry: ModelRegistry, name: str, version: int | None = None) -> dict:
    """What the pages show of one version of a model (the latest by default)."""
    versions = registry.versions(name)
    overview = {"name": name, "versions": versions}
    try:
        loaded = registry.get(name, version)
    except InvalidModelFile as error:  # a broken file placed by hand must not hide the other models
        return {**overview, "version": version or versions[-1], "error": str(error)}
    layers = loaded.document["layers"]
    parameters = loaded.model.get_parameters()
    return {
        **overview,
        "version": loaded.version,
        "error": None,
        "inputs": loaded.n_inputs,
        "outputs": loaded.n_outputs,
        "layers": layers,
        "summary": architecture_summary(layers, loaded.n_inputs),
        "parameters": sum(p.data.size for p in parameters),
        "size": byte_size(sum(p.data.nbytes for p in parameters)),
        "dtype": loaded.dtype.name,
        "metadata": [(str(key), shown_value(value)) for key, value in loaded.document.get("metadata", {}).items()],
    }


# ---------------------------------------------------------------------------------------- jobs


def _what_it_trains(request_fields: dict) -> str:
    if "model" in request_fields:
        version = request_fields.get("version")
        return f"fine-tunes {request_fields['model']}" + (f" v{version}" if version else "")
    if "architecture" in request_fields:
        layers = request_fields["architecture"]
        inputs = next((layer["in_features"] for layer in layers if "in_features" in layer), "?")
        return architecture_summary(layers, inputs)
    return ""


def job_card(record: dict, history: list[dict]) -> dict:
    """One job as its card shows it: the API's view of it plus the loss chart and display strings."""
    view = job_view(record, history)
    progress = view["progress"]
    result = view["result"] or {}
    final_loss = result.get("final_loss", history[-1]["loss"] if history else None)
    return {
        **view,
        "active": view["status"] in ACTIVE,
        "percent": round(100 * progress["epoch"] / progress["epochs"]) if progress["epochs"] else 0,
        "duration": duration(view["timings"]["running_seconds"]),
        "final_loss": None if final_loss is None else f"{final_loss:.4g}",
        "trains": _what_it_trains(view["request"]),
        "save_as": view["request"].get("save_as"),
        "chart": loss_chart(history, progress["epochs"]),
    }


JOB_FILTER_ARGS = JobFilterArgsSchema()


def _status_filter() -> list[str] | None:
    """The page's ``?status=``, read by the API's parser: a bad value is the same 422 as GET /jobs gives."""
    return ApiBlueprint.ARGUMENTS_PARSER.parse(JOB_FILTER_ARGS, request, location="query").get("status")


def _job_cards(statuses: list[str] | None) -> dict:
    """The newest jobs (of ``statuses`` only, when given), how many match, how many each status has, and
    why they could not be read (the queue down must not hide the models)."""
    try:
        housekeeping_on_read()
        store = get_job_backend().store
        records, total = store.page(0, JOBS_SHOWN, statuses)
        counts = store.count_by_status()
        jobs = [job_card(record, store.history(record["id"])) for record in records]
        error = None
    except (RedisError, sqlite3.OperationalError) as failure:
        jobs, total, counts = [], 0, {}
        error = f"The job queue cannot be reached ({type(failure).__name__}: {failure})."
    return {"jobs": jobs, "jobs_total": total, "jobs_error": error, "statuses": statuses,
            "job_counts": [(status, counts.get(status, 0)) for status in STATUSES],
            "all_jobs": sum(counts.values())}


def _job_card_or_404(job_id: str) -> dict:
    # Reap first, as the API's reads do: a running job's card refreshes itself from here, and with its
    # consumer killed (the consumer's reaper with it) nothing else might ever call the job lost.
    housekeeping_on_read()
    store = get_job_backend().store
    record = store.get(job_id)
    if record is None:
        abort_problem(404, "Job not found", f"No job with id {job_id!r}.", type="urn:minigrad:problem:job-not-found")
    return job_card(record, store.history(job_id))


# ---------------------------------------------------------------------------------------- pages


@blp.route("/")
def index():
    statuses = _status_filter()  # before any work: a bad one is a 422
    registry = get_registry()
    models = []
    for name in registry.names():
        try:
            models.append(model_overview(registry, name))
        except (ModelNotFound, VersionNotFound):  # deleted since the listing: the whole page was a 404
            continue
    return render_template("index.html", models=models, **_job_cards(statuses))


@blp.route("/ui/models/<name>")
def model_page(name):
    version = request.args.get("version")
    number = None if version is None else version_in_url(version)
    if version is not None and number is None:
        abort_problem(400, "Invalid version", f"version: expected a positive integer, got {version!r:.40}",
                      type="urn:minigrad:problem:invalid-version", errors={"query": {"version": ["not a version"]}})
    model = model_overview(get_registry(), name, number)
    if not model["error"]:
        model["diagram"] = architecture_diagram(model["layers"], model["inputs"], model["outputs"])
        model["example_inputs"] = json.dumps([[0] * model["inputs"]])
    return render_template("model.html", model=model)


@blp.route("/ui/jobs/<job_id>")
def job_page(job_id):
    return render_template("job.html", job=_job_card_or_404(job_id))


@blp.route("/ui/jobs/<job_id>/card")
def job_card_fragment(job_id):
    """The card alone: what a running job's card on the page replaces itself with."""
    return render_template("job_card.html", job=_job_card_or_404(job_id))


# The job pages with the queue down: the API's 503 to retry (the index shows the models without the jobs).
blp.register_error_handler(RedisError, queue_unavailable)
blp.register_error_handler(sqlite3.OperationalError, queue_unavailable)


@blp.route("/ui/token")
def token_check():
    """204 when the request's bearer token is accepted (or none is configured): the page asks before it
    shows write actions."""
    check_token()
    answer = Response(status=204)
    del answer.headers["Content-Type"]  # no body, so no media type (Flask's default would say text/html)
    return answer
