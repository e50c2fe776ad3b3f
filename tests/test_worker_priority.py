"""The consumer's niceness counts against gunicorn even under Linux's autogroup scheduling."""

import os
import subprocess
import sys

import pytest

SHOW = ("import sys; from service.worker import nice_own_autogroup; nice_own_autogroup(int(sys.argv[1])); "
        "print(open('/proc/self/autogroup').read(), end='')")

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"),
                                reason="this kernel has no autogroup scheduling (/proc/self/autogroup): "
                                       "niceness alone applies, nothing to test")


def autogroup_after(nice: int, own_session: bool) -> str:
    return subprocess.run([sys.executable, "-c", SHOW, str(nice)], capture_output=True, text=True, check=True,
                          start_new_session=own_session).stdout


def test_a_worker_leading_its_session_renices_its_autogroup():
    assert "nice 7" in autogroup_after(7, own_session=True)


def test_a_worker_started_from_a_shell_leaves_the_shells_autogroup_alone():
    with open("/proc/self/autogroup") as mine:
        before = mine.read()
    assert autogroup_after(7, own_session=False) == before
