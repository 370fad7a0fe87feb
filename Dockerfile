# syntax=docker/dockerfile:1
# Multi-stage build: the project's wheel in a builder, a slim non-root runtime with the
# exact dependency versions of requirements.lock (hash-checked).
FROM python:3.11-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ehr_service ./ehr_service
COPY fhir_profiles ./fhir_profiles
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EHR_DATA_DIR=/var/lib/ehr-service \
    EHR_HOST=0.0.0.0 \
    EHR_PORT=8080
RUN useradd --system --uid 10001 --home-dir /var/lib/ehr-service ehr \
    && mkdir -p /var/lib/ehr-service \
    && chown ehr /var/lib/ehr-service
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/* && rm -rf /wheels
USER ehr
# The data directory holds the SQLite file and the keys: keep it on a volume.
VOLUME ["/var/lib/ehr-service"]
EXPOSE 8080
# Ready, not only alive: the database answers, the schema is current, the keys load.
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
    CMD python -c "import os,urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('EHR_PORT', '8080'), timeout=2).status != 200)"
# Migrations are a separate step: docker run IMAGE ehr-service migrate
ENTRYPOINT ["ehr-service"]
CMD ["serve"]
