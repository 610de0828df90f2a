# Condense: the web API and job workers in one image.
#   docker build -t condense .
#   docker run -p 8000:8000 -v condense-data:/data condense            # one container, no servers (condense serve)
#   docker run --rm -v condense-data:/data condense condense user add alice
# Scale-out (PostgreSQL, Redis, S3): deploy/docker-compose.yml and deploy/k8s/.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A CPU-only PyTorch wheel index keeps the image small; pass it with --build-arg PIP_EXTRA_INDEX_URL=...
ARG PIP_EXTRA_INDEX_URL=""

WORKDIR /app
COPY pyproject.toml README.md ./
COPY compression ./compression
COPY pu_mining ./pu_mining
COPY storage ./storage
COPY service ./service
COPY deploy ./deploy
RUN pip install . \
    && useradd --create-home --uid 10001 condense \
    && mkdir -p /data \
    && chown condense:condense /data

USER condense
ENV CONDENSE_DATA_DIR=/data \
    CONDENSE_BIND=0.0.0.0:8000
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4)"
CMD ["condense", "serve"]
