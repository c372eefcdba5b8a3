# Slim, non-root image running `budbringer serve`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY channels ./channels
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /var/lib/budbringer --create-home budbringer
COPY --from=build /install /usr/local
COPY templates /opt/budbringer/templates
WORKDIR /var/lib/budbringer
ENV BUDBRINGER_HOST=0.0.0.0 \
    BUDBRINGER_STORE_URL=sqlite:////var/lib/budbringer/budbringer.db \
    BUDBRINGER_TEMPLATES_DIR=/opt/budbringer/templates \
    PYTHONUNBUFFERED=1
USER budbringer
EXPOSE 8080
VOLUME ["/var/lib/budbringer"]
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
CMD ["budbringer", "serve"]
