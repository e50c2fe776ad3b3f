"""gunicorn settings for the minigrad service.

They live in the package so that every way of starting the service has them: ``gunicorn.conf.py`` at the
project's root (``make serve``, the image's entrypoint) imports this module, and ``minigrad serve`` from
an installed minigrad, with no project checkout, passes ``--config python:service.gunicorn_config``.

Environment: ``PORT`` (default 8000), ``WEB_CONCURRENCY`` (workers, default 2), ``GUNICORN_THREADS``
(threads per worker, default 4), and the service's own ``MINIGRAD_*`` variables, which
``service.create_app`` reads.
"""

from service.config import server_settings
from service.startup import refuse_bad_settings, share_metrics_of_a_running_service

# Read once by the master: a bad setting stops gunicorn here, before any worker boots (and fails) on it.
refuse_bad_settings("gunicorn")
share_metrics_of_a_running_service("gunicorn")  # before on_starting would empty a running server's metrics
_server = server_settings()

wsgi_app = "service:create_app()"
# Loopback only: put a reverse proxy (TLS, rate limits) in front before exposing it further.
bind = f"127.0.0.1:{_server['port']}"
workers = _server["workers"]
# Threads, for HTTP keep-alive: clients that keep their connection (tritonclient, requests.Session,
# load generators) skip a TCP handshake per request, which costs more than a small prediction
# (measured: ~20% less CPU per XOR prediction than sync workers). Threads also keep one slow client
# (a large body trickling in) from holding a whole worker. The work itself is CPU-bound, so a few
# threads per worker are enough; more processes (WEB_CONCURRENCY) is how to use more cores.
worker_class = "gthread"
threads = _server["threads"]
keepalive = 5
# Large batches (a 1,000 x 784 JSON body is ~16 MB) take a while to read and parse.
timeout = 60
graceful_timeout = 10
# One JSON line per request on stdout (the app adds the route and the request id), and gunicorn's own
# messages as JSON on stderr: see service/request_log.py. The app writes no request line of its own.
accesslog = "-"
errorlog = "-"
loglevel = "info"
logger_class = "service.request_log.GunicornJsonLogger"
# gunicorn >= 25 opens a control socket at one fixed path per user; several servers on one machine
# (tests, benchmarks, a second checkout) would take it from each other. Nothing here uses it.
control_socket_disable = True


# Prometheus: every worker writes its counts to files in one directory, which /metrics sums (see
# service/metrics.py). It is set up once, by the master, before any worker exists. The logger class and
# these hooks make the master import the service package, as preload_app would: after a code change,
# restart gunicorn (a HUP would start workers with the code the master already imported).
def on_starting(server):
    from service.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()


def child_exit(server, worker):
    from service.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def post_worker_init(worker):
    # gunicorn's own error answers (URI too long, bad request line...) as problem+json, not HTML.
    from service.gunicorn_problems import install
    from service.startup import freeze_startup_objects
    from service.stopping import set_stopping_on_sigterm

    install()
    set_stopping_on_sigterm()  # a waiting POST /train?wait= answers before graceful_timeout would cut it off
    freeze_startup_objects()  # last: the app is loaded, so garbage collections skip it from now on
