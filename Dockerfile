# careledger: the worker, the projector and every other `careledger` subcommand, in one image.
#
#   docker build -t careledger .
#   docker run --rm -e CARELEDGER_DATABASE_URL=... -e CARELEDGER_KAFKA_BOOTSTRAP=... careledger
#   docker run --rm careledger projections run
#
# Two stages: the first installs the package and its dependencies into a virtualenv, the
# second copies only that virtualenv onto a fresh slim base (no pip cache, no sources).

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package build needs (pyproject's packages.find list and its readme); the
# deployment test checks this list against pyproject.toml.
COPY pyproject.toml README.md ./
COPY careledger ./careledger
COPY domain ./domain
COPY projections ./projections
COPY consumers ./consumers
COPY producers ./producers
COPY schemas ./schemas
# tzdata: zoneinfo needs an IANA database for CARELEDGER_TIMEZONE, and the Debian slim base
# ships only part of it (no legacy names such as US/Central), so bring the PyPI copy.
RUN pip install . tzdata


FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 careledger \
    && useradd --system --uid 10001 --gid careledger --home-dir /app --no-create-home careledger \
    && mkdir /app \
    && chown careledger:careledger /app

COPY --from=build /opt/venv /opt/venv
COPY ops/docker/healthcheck.py /opt/careledger/healthcheck.py

# The working directory is writable by the service user: the SQLite default
# (sqlite:///.careledger/careledger.db) lives here when no PostgreSQL URL is given.
WORKDIR /app
USER careledger

# Prometheus /metrics (CARELEDGER_METRICS_PORT, default 9464).
EXPOSE 9464

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/careledger/healthcheck.py"]

ENTRYPOINT ["careledger"]
CMD ["worker"]
