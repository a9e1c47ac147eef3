# syntax=docker/dockerfile:1
# The dns01-broker image: `docker build -t dns01-broker:0.1.0 .` (see docs/deploy.md).
# The builder installs the project with its postgres, route53 and google extras into a
# virtualenv; the final stage is the same slim Python with only that virtualenv, run as the
# unprivileged user 10001 (uid and gid), which the Helm chart's securityContext expects.

FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dns01-broker/.venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY broker/ broker/
COPY providers/ providers/
RUN /opt/dns01-broker/.venv/bin/pip install ".[postgres,route53,google]"

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 dns01-broker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/dns01-broker --shell /usr/sbin/nologin dns01-broker \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/dns01-broker \
 && install -d -m 0755 /etc/dns01-broker
COPY --from=builder /opt/dns01-broker/.venv /opt/dns01-broker/.venv
# These two win over a config file's http.listen and dns.listen; override them with -e.
ENV PATH=/opt/dns01-broker/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DNS01_BROKER_HTTP__LISTEN=0.0.0.0:8080 \
    DNS01_BROKER_DNS__LISTEN=0.0.0.0:8053
WORKDIR /var/lib/dns01-broker
USER 10001:10001
EXPOSE 8080/tcp 8053/udp 8053/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; host, _, port = os.environ.get('DNS01_BROKER_HTTP__LISTEN', '0.0.0.0:8080').rpartition(':'); host = {'0.0.0.0': '127.0.0.1', '[::]': '[::1]'}.get(host, host); urllib.request.urlopen(f'http://{host}:{port}/healthz', timeout=4)"]
ENTRYPOINT ["dns01-broker"]
CMD ["serve"]
