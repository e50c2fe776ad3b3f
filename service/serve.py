"""``python -m service.serve`` (``make serve``): gunicorn and a training-job consumer, started together
and stopped together.

Ctrl-C (or SIGTERM) stops both: gunicorn finishes the requests in flight, and the consumer puts a job it
was running back in the queue, to be run again by the next consumer. If either process dies on its own,
the other is stopped too, so a half-running service never goes unnoticed. Extra arguments go to gunicorn.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def start(command: list[str]) -> subprocess.Popen:
    # A session of its own: the terminal's Ctrl-C reaches only this script, which decides the order.
    return subprocess.Popen(command, start_new_session=True, preexec_fn=_stop_when_parent_dies(os.getpid()))


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


LISTEN_TIMEOUT = 30.0  # then the consumer starts anyway (gunicorn binding something /proc does not show)


def wait_until_listening(process: subprocess.Popen, stopping, timeout: float = LISTEN_TIMEOUT) -> bool:
    """Wait until ``process`` holds a listening socket; False if it exits (or a stop is asked) first. Where
    /proc cannot tell (not Linux), or after ``timeout``, True: the consumer is not held back for good."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and not stopping():
        listening = holds_a_listening_socket(process.pid)
        if listening is None or listening or time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False


def holds_a_listening_socket(pid: int) -> bool | None:
    """Whether process ``pid`` has a TCP or Unix socket in the listening state; None if /proc cannot say."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return None if not os.path.isdir("/proc/self/fd") else False  # no /proc at all, or the process is gone
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    return any(_listed_as_listening(*table, inodes) for table in _SOCKET_TABLES)


# /proc/net tables: (path, column of the state, the listening state, column of the inode).
_SOCKET_TABLES = (("/proc/net/tcp", 3, "0A", 9), ("/proc/net/tcp6", 3, "0A", 9),
                  ("/proc/net/unix", 3, "00010000", 6))  # unix: the flags column, __SO_ACCEPTCON


def _listed_as_listening(path: str, state_column: int, listening: str, inode_column: int, inodes: set) -> bool:
    try:
        with open(path) as table:
            rows = [row.split() for row in table.readlines()[1:]]
    except OSError:
        return False
    return any(len(row) > inode_column and row[state_column] == listening and row[inode_column] in inodes
               for row in rows)


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
    processes = {"gunicorn": start([sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, *gunicorn_args])}
    # The consumer only once gunicorn listens: on a port another server holds, gunicorn retries for 5 s and
    # exits, and a consumer started beside it could have taken a queued job meanwhile.
    if wait_until_listening(processes["gunicorn"], lambda: stopping):
        processes["consumer"] = start([sys.executable, "-m", "service.worker"])
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
