"""Job settings: where the queue lives, how fast it is polled, how long things are kept, and the limits.

Every value comes from an environment variable (or the same key in the Flask config), so gunicorn
workers, the consumer and consumers on other machines agree by sharing one environment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from redis.connection import parse_url

from ..config import ConfigError
from .store import DEFAULT_QUEUE


@dataclass(frozen=True)
class JobLimits:
    """What one training request may ask for; each breach is a 4xx naming the field."""

    max_samples: int = 100_000
    max_features: int = 4_096
    max_values: int = 5_000_000  # samples x features, which bounds the queue message and the body
    max_layer_size: int = 4_096
    max_layers: int = 32
    max_epochs: int = 10_000
    max_sample_epochs: int = 50_000_000  # epochs x samples: the compute budget of one job
    max_active_jobs: int = 8  # queued + running, across every client


@dataclass(frozen=True)
class JobSettings:
    data_dir: Path = Path("var")
    model_dir: Path = Path("models")
    redis_url: str | None = None
    queue_name: str = DEFAULT_QUEUE
    # The consumer polls SQLite this often when idle; Redis wakes it at once (blocking pop).
    poll_interval: float = 0.1
    # A running job renews its heartbeat at least this often...
    heartbeat_interval: float = 2.0
    # ...and is declared lost once its heartbeat is older than this.
    heartbeat_timeout: float = 30.0
    # Finished jobs (record, history and trained model) are deleted this long after they finished.
    retention_seconds: float = 7 * 24 * 3600.0
    # POST /train?wait= holds a web worker this long at most; keep it under gunicorn's worker timeout.
    max_wait_seconds: float = 25.0
    # ...and at most this many such requests wait at once in one web worker; the next ones answer 202
    # at once. Each wait holds one of a worker's threads, which predictions need (service/gunicorn_config.py: 4).
    max_waiting_requests: int = 2
    limits: JobLimits = JobLimits()

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @classmethod
    def from_mapping(cls, config) -> JobSettings:
        """Read ``MINIGRAD_*`` keys from ``config`` (a Flask config or ``os.environ``)."""

        def get(key, default, kind, minimum=None, above=None):
            """The value of ``key`` as ``kind``; numbers must be finite and >= ``minimum`` (or > ``above``):
            a zero poll interval spins, a negative timeout reaps every running job, a NaN one none."""
            value = config.get(key)
            if value in (None, ""):
                return default
            bound = f" >= {minimum:g}" if minimum is not None else f" > {above:g}" if above is not None else ""
            expected = f"expected {'a number' if kind is float else 'an integer' if kind is int else kind.__name__}"
            try:
                parsed = kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}: {expected}{bound}, got {value!r}") from None
            if kind in (int, float) and not (
                math.isfinite(parsed)
                and (minimum is None or parsed >= minimum)
                and (above is None or parsed > above)
            ):
                raise ConfigError(f"{key}: {expected}{bound}, got {value!r}")
            return parsed

        limits = JobLimits(
            **{
                f.name: get(f"MINIGRAD_TRAIN_{f.name.upper()}", f.default, int, minimum=1)
                for f in fields(JobLimits)
            }
        )
        heartbeat_interval = get("MINIGRAD_HEARTBEAT_INTERVAL", cls.heartbeat_interval, float, above=0)
        # A timeout no longer than the interval would call a job lost between two of its heartbeats.
        heartbeat_timeout = get("MINIGRAD_HEARTBEAT_TIMEOUT", cls.heartbeat_timeout, float, above=heartbeat_interval)
        redis_url = get("MINIGRAD_REDIS_URL", None, str)
        if redis_url is not None:
            try:
                parse_url(redis_url)  # as RedisHuey will: a malformed URL was a 500 on every job request
            except ValueError:
                # Neither the URL nor the parser's message is echoed: both may hold a password (urllib quotes the
                # "port" it could not read, which is the start of a password holding an unencoded / ? or #).
                raise ConfigError("MINIGRAD_REDIS_URL: expected a Redis URL, redis://[:password@]host[:port][/db], "
                                  "rediss://... or unix://path, with a port that is a number and any / ? # [ ] in "
                                  "the password percent-encoded (the value is not shown: it may hold a password)"
                                  ) from None
        return cls(
            data_dir=Path(get("MINIGRAD_DATA_DIR", cls.data_dir, str)),
            model_dir=Path(get("MINIGRAD_MODEL_DIR", cls.model_dir, str)),
            redis_url=redis_url,
            queue_name=get("MINIGRAD_QUEUE_NAME", cls.queue_name, str),
            poll_interval=get("MINIGRAD_POLL_INTERVAL", cls.poll_interval, float, above=0),
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            retention_seconds=get("MINIGRAD_JOB_RETENTION_SECONDS", cls.retention_seconds, float, minimum=0),
            max_wait_seconds=get("MINIGRAD_MAX_WAIT_SECONDS", cls.max_wait_seconds, float, minimum=0),
            max_waiting_requests=get("MINIGRAD_MAX_WAITING_REQUESTS", cls.max_waiting_requests, int, minimum=0),
            limits=limits,
        )

    @classmethod
    def from_env(cls) -> JobSettings:
        return cls.from_mapping(os.environ)
