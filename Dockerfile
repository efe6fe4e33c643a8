# syntax=docker/dockerfile:1
# ringfence: a slim, non-root image of the gRPC service (docs/operations.md).
#   docker build -t ringfence .
#   docker run -p 50051:50051 -v ringfence-data:/data ringfence
# tests/e2e/test_container_entrypoint.py builds a venv the way this file does and runs its
# entrypoint and health check (no Docker engine needed).

ARG PYTHON_VERSION=3.11

# --- builder: wheels of both distributions, installed into a self-contained venv ----------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy
# A compiler only for dependencies without a wheel for this platform; it stays in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && pip install "uv==${UV_VERSION}"
WORKDIR /src
COPY clients/python/ clients/python/
COPY pyproject.toml README.md ./
COPY service/ service/
# Not editable installs: the wheels, as users get them, plus the tracing extra.
RUN uv build --wheel --out-dir /wheels clients/python \
 && uv build --wheel --out-dir /wheels . \
 && uv venv /opt/ringfence --python /usr/local/bin/python3 \
 && uv pip install --python /opt/ringfence/bin/python --compile-bytecode \
        /wheels/ringfence_client-*.whl "$(ls /wheels/ringfence-[0-9]*.whl)[tracing]" \
 && /opt/ringfence/bin/ringfence version
# Compile the k-NN refit backend's numba kernels into the venv's cache now (~1 min), so the
# container's first large refit does not spend that in its worker. numba recompiles (into
# $HOME=/data/.cache) only if the run-time CPU differs from the build machine's.
RUN /opt/ringfence/bin/python -c "from ringfence.service.core.fitting import warm_up; warm_up()"

# --- runtime: the venv, a non-root user, no compiler -----------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="ringfence" \
      org.opencontainers.image.description="Finds rings of accounts run by one operator and scores API requests for rate limiters" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 ringfence \
 && useradd --system --uid 10001 --gid ringfence --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin ringfence \
 && mkdir -p /data /models /mmdb /etc/ringfence \
 && chown ringfence:ringfence /data /models
COPY --from=builder /opt/ringfence /opt/ringfence
# Listen on every interface inside the container; health on a plaintext side port (so the
# HEALTHCHECK and Kubernetes grpc probes work when the main port uses TLS); metrics on 9464.
ENV PATH=/opt/ringfence/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RINGFENCE_HOST=0.0.0.0 \
    RINGFENCE_PORT=50051 \
    RINGFENCE_HEALTH_PORT=50052 \
    RINGFENCE_METRICS_PORT=9464 \
    RINGFENCE_DATA_DIR=/data \
    RINGFENCE_MODEL_DIR=/models
# /data: profiles, event log, hash key. /models: cluster model artifacts.
# /mmdb: MaxMind databases (mount read-only, point RINGFENCE_GEOIP_*_DB at the files).
VOLUME ["/data", "/models", "/mmdb"]
WORKDIR /data
USER 10001:10001
EXPOSE 50051 50052 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["ringfence", "healthcheck", "--timeout", "3"]
# SIGTERM (docker stop, Kubernetes): health turns NOT_SERVING, calls drain, then exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ringfence", "serve"]
CMD []
