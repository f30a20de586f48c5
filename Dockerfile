# A Tidings worker: `docker build -t tidings .`, or `docker compose up --build` (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Installed non-editable and built outside /app: with streams/ next to the working directory,
# `python -m streams` would import the source copy instead of the installed package.
WORKDIR /src
# README.m[d]: copied when present (pyproject names it), without failing while it is absent.
COPY pyproject.toml README.m[d] ./
COPY streams/ streams/
RUN --mount=type=cache,target=/root/.cache/pip pip install . && rm -rf /src

# The package's REPO_ROOT resolves to site-packages once installed, so the settings' default
# paths point nowhere: name the copied folders explicitly.
COPY schemas/ /app/schemas/
COPY templates/ /app/templates/
# The example tenants, for `tidings-tenants publish /app/deploy/tenants` (the worker itself reads
# its tenants from the tenants topic).
COPY deploy/tenants/ /app/deploy/tenants/
ENV TIDINGS_SCHEMAS_DIR=/app/schemas \
    TIDINGS_TEMPLATES_DIR=/app/templates \
    TIDINGS_DATA_DIR=/var/lib/tidings \
    TIDINGS_WEB_HOST=0.0.0.0

# A new named volume mounted on /var/lib/tidings takes this directory's owner, so the
# unprivileged user can write its RocksDB state there.
RUN useradd --system --uid 10001 --no-create-home --home-dir /var/lib/tidings tidings \
    && mkdir -p /var/lib/tidings && chown tidings: /var/lib/tidings
USER tidings
WORKDIR /var/lib/tidings

EXPOSE 6066
CMD ["python", "-m", "streams", "worker"]
