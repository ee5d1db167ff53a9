# One image for every IOC component; docker-compose.yml picks the command per service.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ioc ioc
COPY events events
COPY simulators simulators
COPY ingest ingest
COPY streams streams
COPY storage storage
COPY ws ws
COPY readapi readapi
RUN pip install .
RUN useradd --system --uid 10001 ioc
USER ioc
ENTRYPOINT ["ioc"]
