"""Structured logs: one JSON object per line, and a request id that ties a request's lines together.

Each request gets an id: the caller's ``X-Request-ID`` when it is short and made of safe characters
(so a proxy's or client's id carries through), a new one otherwise; it is sent back in ``X-Request-ID``
and is in every log line written while the request runs. The line per request is gunicorn's access log,
written as JSON by ``GunicornJsonLogger`` (``logger_class`` in gunicorn.conf.py): gunicorn knows the time
until the last byte was sent and the bytes sent; the app adds the route's name and the request id
through the WSGI environ. The app itself logs no line per request, so nothing is logged twice.

Errors (a 500) are logged by the app with the traceback in a ``traceback`` field; the client gets a
problem document without it (``service.errors``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

from flask import Flask, has_request_context, request
from gunicorn.glogging import Logger as GunicornLogger

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"  # the header as WSGI hands it over (cheaper than request.headers)
# The environ key through which the app hands the request id and the route's name to gunicorn's log.
ENVIRON_KEY = "minigrad.request"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def request_id_from(header: str | None) -> str:
    """The caller's id when it is 1-64 characters of ``A-Z a-z 0-9 . _ : -``, else a new random one."""
    if header and _SAFE_REQUEST_ID.fullmatch(header):
        return header
    return os.urandom(16).hex()


def _timestamp(seconds: float) -> str:
    """ISO 8601 in UTC to the millisecond: ``2026-11-27T07:16:03.914Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, plus ``request_id`` inside a request and ``traceback``
    when the record carries an exception. A record's ``fields`` (``extra={"fields": {...}}``) are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": _timestamp(record.created), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if has_request_context() and ENVIRON_KEY in request.environ:
            entry["request_id"] = request.environ[ENVIRON_KEY]["request_id"]
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["traceback"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (redirected, or a test's capture), not as it
    was when the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def log_to_stderr_as_json(logger_name: str, level: int = logging.INFO) -> None:
    """Send ``logger_name``'s records (and its children's) to stderr as JSON lines; idempotent."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
        # Flask's default handler would write the same records again, as plain text.
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def log_warnings_as_json() -> None:
    """Python warnings (numpy's "overflow encountered", say, from a model fed huge inputs) as JSON log
    records of ``py.warnings`` instead of raw text on stderr, which would break a line-per-record log."""
    logging.captureWarnings(True)
    log_to_stderr_as_json("py.warnings", logging.WARNING)


class GunicornJsonLogger(GunicornLogger):
    """gunicorn's logs as JSON lines: the access log (one line per request, with what the app put in
    the environ) and gunicorn's own messages."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        from_app = environ.get(ENVIRON_KEY) or {}
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        line = {
            "time": _timestamp(time.time()),
            "level": "info",
            "logger": "gunicorn.access",
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "endpoint": from_app.get("endpoint"),
            "route": from_app.get("route"),
            "status": int(status),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes": getattr(resp, "sent", None),
            "request_id": from_app.get("request_id"),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        try:
            self.access_log.info(json.dumps(line))
        except Exception:
            self.error("could not write the access log line", exc_info=True)


def init_app(app: Flask) -> None:
    """Request ids in and out, the route for the access log, and the app's logs as JSON on stderr."""
    for logger_name in (app.logger.name, "minigrad"):  # the app's, and the job code's (the reaper runs here too)
        log_to_stderr_as_json(logger_name)
    log_warnings_as_json()

    # Both hooks run on every request: one look-up of the request proxy each, the environ for the rest.
    @app.before_request
    def assign_request_id():
        environ = request.environ
        environ[ENVIRON_KEY] = {"request_id": request_id_from(environ.get(_REQUEST_ID_ENVIRON))}

    @app.after_request
    def hand_over_request_id(response):
        current = request._get_current_object()
        record = current.environ.get(ENVIRON_KEY)
        if record is None:  # before_request did not run (a request refused before it): an id of its own
            record = current.environ[ENVIRON_KEY] = {"request_id": request_id_from(None)}
        response.headers[REQUEST_ID_HEADER] = record["request_id"]
        rule = current.url_rule
        if rule is not None:
            record["endpoint"], record["route"] = rule.endpoint, rule.rule
        return response
