# Condense: the web API and job workers in one image (docs/deploy.md).
#   docker build -t condense:0.1.0 .
#   docker run -p 8000:8000 -v condense-data:/data condense:0.1.0           # one container, no servers (condense serve)
#   docker run --rm -v condense-data:/data condense:0.1.0 condense user add alice
# Scale-out (PostgreSQL, Redis, S3): deploy/docker-compose.yml and deploy/k8s/.
#
# BASE_IMAGE: any Debian-based image with Python 3.11 and its venv module. scripts/container-smoke.sh builds one from a
# Debian bookworm root filesystem (debootstrap) where python:3.11-slim cannot be pulled.
#
# CPU-only PyTorch: PyPI's torch wheel for x86_64 is the CUDA build. In the 6.8 GB image, the nvidia-* wheels take
# 3.2 GB, triton 0.9 GB and torch 1.2 GB (a CPU build of torch unpacks to 0.7 GB): the CPU build saves about 4.6 GB,
# leaving about 2.2 GB (docs/deploy.md). For CPU-only nodes pass PyTorch's CPU wheel index:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t condense:0.1.0-cpu .
# torch and torchvision then come from that index (same pinned versions, "+cpu" builds) and nothing of CUDA is
# installed; everything else still comes from PyPI.
ARG BASE_IMAGE=python:3.11-slim

# The runtime dependencies, read from pyproject.toml (their one home) into a plain list. Only this list reaches the
# image stage below, so editing another part of pyproject.toml (version, test tools, lint settings) leaves the
# dependency layer cached.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /pyproject.toml
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /requirements.txt

FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Real images for the demo pool and `condense example`: Fashion-MNIST from Debian (/usr/share/datasets/fashion-mnist).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group condense \
    && mkdir -p /data /keys \
    && chown condense:condense /data /keys

# Dependencies only, in their own layer: a change to the source below reuses this layer (several GB) from the cache.
# The project itself is installed after the source is copied.
ARG TORCH_INDEX_URL=""
# pip's own settings, for a build behind a proxy or beside a local mirror (scripts/container-smoke.sh passes them when
# the host's pip has them): PIP_EXTRA_INDEX_URL (more package indexes), PIP_CERT (a CA bundle, mounted into the build).
# Unset unless given.
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
# Animal-MNIST's data files (demo pool) are installed with --no-deps: its own loader pulls tensorflow, never imported.
COPY --from=requirements /requirements.txt /tmp/condense-deps/requirements.txt
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install 'setuptools>=68' wheel \
    && if [ -n "$TORCH_INDEX_URL" ]; then \
         grep -E '^torch(vision)?==' /tmp/condense-deps/requirements.txt > /tmp/condense-deps/torch.txt \
         && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/condense-deps/torch.txt; \
       fi \
    && pip install -r /tmp/condense-deps/requirements.txt \
    && pip install --no-deps 'animal-mnist==0.4' \
    && rm -rf /tmp/condense-deps

WORKDIR /app
COPY README.md pyproject.toml ./
COPY compression ./compression
COPY pu_mining ./pu_mining
COPY storage ./storage
COPY service ./service
COPY deploy ./deploy
# --no-deps --no-build-isolation: everything is in the layer above, so a code change installs in seconds, offline.
RUN pip install --no-deps --no-build-isolation . && rm -rf build ./*.egg-info

USER 10001:10001
ENV CONDENSE_DATA_DIR=/data \
    CONDENSE_BIND=0.0.0.0:8000 \
    HOME=/home/condense
# /data: SQLite, local blobs and scratch (condense serve). /keys: where compose keeps the session key (a named
# volume takes this folder's owner, so the non-root user can write it).
VOLUME ["/data"]
EXPOSE 8000
# The health check is for containers that serve HTTP (the default `condense serve`, and gunicorn): it asks
# /api/v1/health on the port of CONDENSE_BIND. Job-worker containers (`condense worker`) serve no HTTP: compose gives
# them the heartbeat check instead (deploy/docker-compose.yml); with plain `docker run`, pass
# -e CONDENSE_WORKER_HEARTBEAT_FILE=/tmp/condense-worker-alive --health-cmd 'condense worker --check-heartbeat 600'.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]
CMD ["condense", "serve"]
