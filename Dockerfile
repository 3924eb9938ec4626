# syntax=docker/dockerfile:1
# One image for every clusterport command: api, agent-server, worker, migrate, agent, serve;
# add-on install pods run its `helm`.
#   docker build -t clusterport .
#   docker run --rm clusterport --help

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG GO_IMAGE=golang:1.26-bookworm
ARG HELM_VERSION=v3.19.0

# --- helm: add-on install pods run `helm` from this image (built from source, no download) ---
FROM ${GO_IMAGE} AS helm
ARG HELM_VERSION
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags "-s -w" \
        "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"

# --- build: the locked dependencies in /opt/venv, the project installed from /app ---
FROM ${PYTHON_IMAGE} AS build

ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install "uv==${UV_VERSION}"

# The source lives in /app in both stages: `clusterport migrate` finds alembic.ini and migrations/
# next to the `app` package, so the project is installed in editable mode from there.
WORKDIR /app

# Dependencies first, in their own layer, so code changes do not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
COPY workers ./workers
RUN uv sync --frozen --no-dev \
 && python -m compileall -q app workers migrations

# --- tools: the renderers GitOps runs (helm template, kustomize build), from the Go module proxy
FROM golang:1.26-bookworm AS tools
ARG HELM_VERSION=v3.19.0
ARG KUSTOMIZE_VERSION=v5.8.3
RUN GOBIN=/out CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" \
 && GOBIN=/out CGO_ENABLED=0 go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"

# --- runtime: the interpreter, the virtualenv and /app; no uv, no build tools ---
FROM ${PYTHON_IMAGE} AS runtime

# git fetches manifest repositories for GitOps.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=tools /out/helm /out/kustomize /usr/local/bin/

RUN groupadd --system --gid 10001 clusterport \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin clusterport \
 && mkdir -p /var/lib/clusterport \
 && chown 10001:10001 /var/lib/clusterport

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY --from=helm /out/helm /usr/local/bin/helm
WORKDIR /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CLUSTERPORT_LOG_FORMAT=json \
    CLUSTERPORT_BIND_HOST=0.0.0.0 \
    CLUSTERPORT_DATA_DIR=/var/lib/clusterport \
    CLUSTERPORT_GITOPS_KUSTOMIZE=/usr/local/bin/kustomize

# Numeric user so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# API, agent websocket, health/metrics, Kubernetes API proxy.
EXPOSE 8080 8150 8151 8154

ENTRYPOINT ["clusterport"]
CMD ["serve"]
