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
