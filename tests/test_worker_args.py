"""The consumer's command line (``minigrad worker`` / ``minigrad-worker``): bad values are refused up front."""

import pytest

from service.worker import parse_args


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_workers_must_be_a_positive_whole_number(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--workers", value])
    assert exit_info.value.code == 2
    assert "argument -w/--workers: expected a whole number of at least 1" in capsys.readouterr().err


def test_the_environment_default_is_checked_like_the_option(monkeypatch, capsys):
    monkeypatch.setenv("MINIGRAD_WORKERS", "0")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "expected a whole number of at least 1, got 0" in capsys.readouterr().err
    monkeypatch.setenv("MINIGRAD_WORKERS", "3")
    assert parse_args([]).workers == 3
    assert parse_args(["-w", "2"]).workers == 2


def test_a_bad_niceness_in_the_environment_is_a_usage_error(monkeypatch, capsys):
    # int() of the variable ran while the parser was built: a ValueError traceback, the option not named.
    monkeypatch.setenv("MINIGRAD_WORKER_NICE", "high")
    with pytest.raises(SystemExit) as exit_info:
        parse_args([])
    assert exit_info.value.code == 2 and "argument --nice: invalid int value: 'high'" in capsys.readouterr().err
    monkeypatch.setenv("MINIGRAD_WORKER_NICE", "")  # set but empty: the default, as the other variables
    assert parse_args([]).nice == 10
    monkeypatch.setenv("MINIGRAD_WORKER_NICE", "5")
    assert parse_args([]).nice == 5 and parse_args(["--nice", "0"]).nice == 0
