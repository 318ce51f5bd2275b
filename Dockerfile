# The feedbackloop worker and collector. Build: docker build -t feedbackloop .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY feedbackloop ./feedbackloop
COPY reporting ./reporting
COPY producers ./producers
COPY stream_processors ./stream_processors
COPY sinks ./sinks
COPY experiments ./experiments
COPY infra ./infra
COPY schemas ./schemas
RUN pip install . && rm -rf build

# A fixed uid, so a bind mount can be handed to it (chown 10001). Everything the worker, the
# collector and the SDK write lives under /var/lib/feedbackloop, which that user owns: the
# processors' state folder, the spool, and whatever a relative default (chdb, .env) points at.
# In docker-compose.yml it is a volume; a new named volume takes this folder's owner.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/feedbackloop feedbackloop \
    && install -d -o feedbackloop -g feedbackloop -m 0750 /var/lib/feedbackloop
ENV FEEDBACKLOOP_PIPELINE__DATA_DIR=/var/lib/feedbackloop/faust \
    FEEDBACKLOOP_PRODUCER__SPOOL_DIR=/var/lib/feedbackloop/spool \
    FEEDBACKLOOP_STACK__HOME=/var/lib/feedbackloop
WORKDIR /var/lib/feedbackloop
USER feedbackloop
VOLUME ["/var/lib/feedbackloop"]
ENTRYPOINT ["feedbackloop"]
CMD ["worker"]
