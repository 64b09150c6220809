# lb in a container: docs/deployment.md, "lb at the edge" > Docker.
# 3.11: at lb's current code 3.13 used 4-18 % more CPU per request in every interleaved bench
# comparison (docs/performance.md, "Python 3.11 or 3.13"); CI tests both.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LB_CONFIG=/etc/lb/config.yaml

WORKDIR /app

# Dependencies first, in a layer of their own: a change to lb's source does not reinstall them.
# They are read from pyproject.toml, so the list is kept in one place.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && useradd --system --uid 10001 --no-create-home lb

# Then lb itself, without touching the dependencies installed above.
COPY src ./src
RUN pip install --no-cache-dir --no-deps .

# A config that makes sense in a container (three backends by name, admin API on its own
# loopback port); mount your own over it, or point $LB_CONFIG elsewhere.
COPY deploy/docker/lb.yaml /etc/lb/config.yaml

USER 10001
EXPOSE 8080

# `lb healthcheck` reads the same config as `lb serve` and asks healthz where it is served: on
# admin.listen when set, else on the traffic port, under admin.path_prefix.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["lb", "healthcheck", "--port", "8080"]

# SIGTERM: lb stops accepting and lets requests in flight finish for server.graceful_timeout
# (30s by default). `docker stop` waits only 10s before SIGKILL: give it more (`docker stop -t
# 35`, compose's stop_grace_period) or lower graceful_timeout (docs/deployment.md).
STOPSIGNAL SIGTERM
CMD ["lb", "serve", "--host", "0.0.0.0", "--port", "8080"]
