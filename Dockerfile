# pixelpipe worker image: `docker compose up` (see docker-compose.yml) or
#   docker build -t pixelpipe . && docker run --rm -e PIXELPIPE_KAFKA=kafka://HOST:9092 \
#       -e PIXELPIPE_WEB_TOKEN=... pixelpipe
# (the web server binds 0.0.0.0 in a container, so the worker wants a bearer token)
# Unverified here (no Docker engine on the machine it was written on).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# pyproject.toml names README.md as the readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY pixelpipe ./pixelpipe
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app pixelpipe \
    && mkdir -p /data/blobs /data/state \
    && chown -R pixelpipe /data

USER pixelpipe
ENV PIXELPIPE_DATA=/data/blobs \
    PIXELPIPE_DATADIR=/data/state \
    PIXELPIPE_WEB_HOST=0.0.0.0 \
    PIXELPIPE_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["pixelpipe"]
CMD ["worker"]
