# convmem daemon: MCP over Streamable HTTP (/mcp), the WebSocket daemon (/ws), /health, /metrics.
# Multi-stage: build a wheel and its dependencies in a builder, run as a non-root user.

FROM python:3.12-slim AS builder
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/convmem \
 && /opt/convmem/bin/pip install ".[all]"

FROM python:3.12-slim
RUN groupadd --system convmem && useradd --system --gid convmem --home /var/lib/convmem convmem \
 && mkdir -p /var/lib/convmem/data && chown -R convmem:convmem /var/lib/convmem
COPY --from=builder /opt/convmem /opt/convmem
ENV PATH=/opt/convmem/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CONVMEM_HOST=0.0.0.0 \
    CONVMEM_PORT=8079 \
    CONVMEM_STORE_URL=sqlite:////var/lib/convmem/data/convmem.db
USER convmem
WORKDIR /var/lib/convmem
EXPOSE 8079
# A real check: /health answers 200 only when the store answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8079/health', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["convmem"]
CMD ["serve"]
