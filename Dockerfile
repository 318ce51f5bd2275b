# The feedbackloop worker and collector. Build: docker build -t feedbackloop .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY feedbackloop ./feedbackloop
COPY reporting ./reporting
COPY producers ./producers
COPY stream_processors ./stream_processors
COPY sinks ./sinks
COPY experiments ./experiments
COPY infra ./infra
COPY schemas ./schemas
RUN pip install . && useradd --create-home feedbackloop
USER feedbackloop
ENTRYPOINT ["feedbackloop"]
CMD ["worker"]
