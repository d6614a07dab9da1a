# pgjobs and its examples, for docker-compose.yml. The same image runs `pgjobs migrate`,
# `pgjobs worker ...` and the example web app.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY pgjobs ./pgjobs
COPY sql ./sql
RUN pip install .

COPY examples ./examples
RUN useradd --system --no-create-home pgjobs
USER pgjobs

CMD ["pgjobs", "--help"]
