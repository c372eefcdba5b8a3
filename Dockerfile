# Slim, non-root image running `budbringer serve`.
# Python 3.11.10 or later: earlier patch releases write RFC 2047 encoded words that
# hold line breaks into headers unquoted (CVE-2024-6923). Budbringer builds its own
# email headers safely on any 3.11, but other code in the process may not; the
# `3.11-slim` tag takes the newest patch release; the build stops on an older one.
ARG PYTHON_MIN=3.11.10
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY gateway ./gateway
COPY channels ./channels
RUN pip install --no-cache-dir --prefix=/install -c constraints.txt .

FROM python:3.11-slim
ARG PYTHON_MIN
RUN python -c "import sys; v = tuple(map(int, '${PYTHON_MIN}'.split('.'))); sys.exit(sys.version_info[:3] < v)" \
    || (echo "Python ${PYTHON_MIN} or later is required (CVE-2024-6923)" >&2; exit 1)
RUN useradd --system --uid 10001 --home /var/lib/budbringer --create-home budbringer
COPY --from=build /install /usr/local
COPY templates /opt/budbringer/templates
WORKDIR /var/lib/budbringer
# Production: the gateway refuses to start without real providers, an https
# BUDBRINGER_PUBLIC_URL and BUDBRINGER_SECRET_KEY (see README, "Going to production").
ENV BUDBRINGER_ENVIRONMENT=production \
    BUDBRINGER_HOST=0.0.0.0 \
    BUDBRINGER_STORE_URL=sqlite:////var/lib/budbringer/budbringer.db \
    BUDBRINGER_TEMPLATES_DIR=/opt/budbringer/templates \
    PYTHONUNBUFFERED=1
USER budbringer
EXPOSE 8080
VOLUME ["/var/lib/budbringer"]
# The port the gateway really listens on (BUDBRINGER_PORT), not a hard-coded 8080.
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import os,sys,urllib.request; port=os.environ.get('BUDBRINGER_PORT','8080'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz').status != 200)"
CMD ["budbringer", "serve"]
