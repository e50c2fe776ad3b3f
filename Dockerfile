# syntax=docker/dockerfile:1
# The minigrad service image: gunicorn serving the models in /models. The same image runs the
# training-job consumer (docker-compose.yml overrides the entrypoint with `minigrad worker`).

# ---- build: the minigrad wheel and every dependency's wheel (with the onnx extra, so the service takes and
# gives ONNX files), so the runtime stage installs offline.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY minigrad/ minigrad/
COPY service/ service/
RUN pip wheel --wheel-dir /wheels '.[onnx]'

# ---- runtime: no compilers, no wheels, no pip cache; only the installed packages and the shipped files.
FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="minigrad" \
      org.opencontainers.image.description="Trains and serves minigrad models over HTTP" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MINIGRAD_MODEL_DIR=/models \
    MINIGRAD_DATA_DIR=/data

# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
# --no-index: the only versions pip can see are the wheels the build stage made, so nothing is left unpinned.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels 'minigrad[onnx]' \
    && groupadd --system --gid 10001 minigrad \
    && useradd --system --no-log-init --uid 10001 --gid minigrad --home-dir /app --shell /usr/sbin/nologin minigrad \
    && mkdir -p /app /models /data \
    && chown minigrad:minigrad /app /models /data

WORKDIR /app
COPY --chown=minigrad:minigrad gunicorn.conf.py /app/gunicorn.conf.py
# The shipped example models; a fresh named volume mounted on /models starts as a copy of them.
COPY --chown=minigrad:minigrad models/ /models/
VOLUME ["/models", "/data"]

# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# slim has no curl: ask /healthz with the interpreter that is there anyway.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# gunicorn.conf.py binds loopback for local use; in a container the port must be reachable from outside
# (publish it elsewhere with ports: "9000:8000", not by changing it here).
ENTRYPOINT ["gunicorn", "--config", "/app/gunicorn.conf.py"]
CMD ["--bind", "0.0.0.0:8000"]
