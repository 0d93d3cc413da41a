# One image for the API, the migration step and the workers.
# TORCH_INDEX picks the PyTorch build: CPU by default, a CUDA index for GPU workers.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/tailor
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" torch==2.13.0
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY tailor ./tailor
COPY tailor_cli ./tailor_cli
COPY tailor_common ./tailor_common
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-cache-dir .
RUN useradd --create-home tailor && mkdir -p /data && chown tailor /data
USER tailor
EXPOSE 8000
