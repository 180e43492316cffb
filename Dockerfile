# inspector: offline analysis image (the live sidecar's ports and healthcheck come with it).
#   docker build -t inspector .
#   docker run --rm -v "$PWD/pcaps:/data:ro" inspector analyze /data/core --eve -
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/inspector
COPY pyproject.toml README.md ./
COPY inspector ./inspector
COPY signatures ./signatures
RUN pip install . && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin inspector
ENV INSPECTOR_SIGNATURES=/opt/inspector/signatures
USER inspector
WORKDIR /work
ENTRYPOINT ["inspector"]
CMD ["--help"]
