"""gunicorn's own error answers (a request line or headers over its limits, a malformed request) as
application/problem+json like every other error of the service, instead of gunicorn's HTML page.

gunicorn writes them with ``gunicorn.util.write_error`` before any application code runs;
``install()`` (called by the gunicorn settings, service/gunicorn_config.py, in each worker) puts
``write_problem`` in its place.
"""

from __future__ import annotations

import json

from gunicorn import util

from .errors import MALFORMED_REQUEST, PROBLEM_MIMETYPE, problem_document


def write_problem(sock, status: int, reason: str, message: str) -> None:
    """What gunicorn's ``write_error`` sends, as a problem document; the connection is closed after it."""
    body = json.dumps(problem_document(status, reason, message or None,
                                       type=MALFORMED_REQUEST)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {PROBLEM_MIMETYPE}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def install() -> None:
    # Found by the API fuzzer over HTTP (tests/test_api_fuzz.py): a 4 KB query string got a text/html 414.
    util.write_error = write_problem
