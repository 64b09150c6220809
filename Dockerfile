FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LB_CONFIG=/etc/lb/config.yaml
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --uid 10001 --no-create-home lb
COPY config.yaml /etc/lb/config.yaml
USER lb
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/_lb/healthz', timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
CMD ["lb", "serve", "--host", "0.0.0.0", "--port", "8080"]
