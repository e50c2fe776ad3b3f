"""``python -m service.serve`` (``make serve``): gunicorn and a training-job consumer, started together
and stopped together.

Ctrl-C (or SIGTERM) stops both: gunicorn finishes the requests in flight, and the consumer puts a job it
was running back in the queue, to be run again by the next consumer. If either process dies on its own,
the other is stopped too, so a half-running service never goes unnoticed. Extra arguments go to gunicorn.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gunicorn import systemd

from .metrics import prepare_multiprocess_dir
from .startup import refuse_bad_settings, share_metrics_of_a_running_service

# The project's gunicorn.conf.py in a checkout (``make serve``); the same settings from the package otherwise.
_PROJECT_CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
GUNICORN_CONF = str(_PROJECT_CONF) if _PROJECT_CONF.is_file() else "python:service.gunicorn_config"
STOP_TIMEOUT = 20.0


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_when_parent_dies(parent: int):
    """For the child, before it runs: SIGTERM when this script dies, even by SIGKILL (Linux), so a killed
    ``serve`` never leaves gunicorn or the consumer running on their own."""

    def arrange():
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before the request took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return arrange


def start(command: list[str], env: dict | None = None) -> subprocess.Popen:
    # A session of its own: the terminal's Ctrl-C reaches only this script, which decides the order.
    return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_stop_when_parent_dies(os.getpid()))


def stop_all(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, process in processes.items():
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"serve: {name} did not stop within {STOP_TIMEOUT:g} s; killing it", file=sys.stderr)
            process.kill()
            process.wait()


READY_TIMEOUT = 30.0  # then the consumer starts anyway (a gunicorn that does not report, e.g. an old one)


class ReadyNotice:
    """A Unix datagram socket that gunicorn's master reports to, in systemd's notify protocol: given as
    ``NOTIFY_SOCKET``, it receives ``READY=1`` once every address is bound. Unlike a port probe, it knows
    whatever gunicorn binds (a config file's ``bind``, several addresses, ``--reuse-port``)."""

    def __init__(self):
        self._directory = tempfile.mkdtemp(prefix="minigrad-serve-")
        self.address = os.path.join(self._directory, "notify")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.address)

    def wait(self, process: subprocess.Popen, stopping: Callable[[], bool], timeout: float = READY_TIMEOUT) -> bool:
        """True once ``process`` reports ready (or after ``timeout``); False if it exits, or a stop is asked, first."""
        deadline = time.monotonic() + timeout
        while process.poll() is None and not stopping():
            if select.select([self._socket], [], [], 0.2)[0]:
                if b"READY=1" in self._socket.recv(4096).split(b"\n"):
                    return True
            elif time.monotonic() > deadline:
                return True
        return False

    def close(self) -> None:
        self._socket.close()
        shutil.rmtree(self._directory, ignore_errors=True)


def main(argv=None) -> int:
    gunicorn_args = sys.argv[1:] if argv is None else argv
    refuse_bad_settings("serve")  # before anything starts: gunicorn and the consumer would each fail on it
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    # One metrics directory for both, so /metrics also counts the consumer's training time.
    share_metrics_of_a_running_service("serve")
    prepare_multiprocess_dir()
    # The consumer only once gunicorn has bound its addresses: on a port another server holds, gunicorn
    # retries for 5 s and exits, and a consumer started beside it could have taken a queued job meanwhile.
    ready = ReadyNotice()
    try:
        processes = {"gunicorn": start([sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, *gunicorn_args],
                                       env={**os.environ, "NOTIFY_SOCKET": ready.address})}
        if ready.wait(processes["gunicorn"], lambda: stopping):
            processes["consumer"] = start([sys.executable, "-m", "service.worker"])
            # Under systemd (Type=notify) this script is the main process: it reports for the service.
            systemd.sd_notify("READY=1", logging.getLogger(__name__))
    finally:
        ready.close()
    exited = None
    while not stopping and exited is None:
        exited = next((name for name, p in processes.items() if p.poll() is not None), None)
        time.sleep(0.2)
    if exited:
        print(f"serve: {exited} {_how_it_ended(processes[exited].returncode)}; stopping the rest", file=sys.stderr)
    stop_all(processes)
    if exited is None:
        return 0
    code = processes[exited].returncode
    # The shell's convention for a death by signal (128 + its number); sys.exit(-9) would be status 247.
    return 128 - code if code < 0 else code or 1


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


if __name__ == "__main__":
    sys.exit(main())
