# inspector: offline analysis and the live sidecar in one image.
#   docker build -t inspector .
#   offline:  docker run --rm -v "$PWD/pcaps:/data:ro" inspector analyze /data/core --eve -
#   sidecar:  docker run --rm -p 9001:9001 -v "$PWD/certs:/certs:ro" inspector proxy \
#               --upstream h2c://triton:8001 --listen 0.0.0.0:9001 \
#               --cert /certs/server.pem --key /certs/server-key.pem --metrics 0.0.0.0:9464
# Ports: 9000/9001 the proxy listeners used in deploy/ (any --listen works), 9464 metrics and
# /healthz. The health check asks /healthz on 127.0.0.1:9464 (the sidecar's default metrics
# address): a one-shot `analyze` run never reaches the health check's first probe.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/inspector
COPY pyproject.toml README.md ./
COPY inspector ./inspector
COPY signatures ./signatures
COPY addons ./addons
RUN pip install ".[live]" && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin inspector
ENV INSPECTOR_SIGNATURES=/opt/inspector/signatures
USER 10001
WORKDIR /tmp
EXPOSE 9000 9001 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["inspector"]
CMD ["--help"]
