# One image for the API and the workers (docker-compose.yml picks the command).
#
# torch from PyPI on x86_64 is the CUDA build, which a GPU worker needs; an API-only or CPU image
# can pass another requirement, e.g. --build-arg TORCH="torch==2.14.1+cpu torchvision==0.29.1+cpu"
# together with PIP_INDEX_URL/PIP_EXTRA_INDEX_URL build arguments for the index that has them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

ARG TORCH="torch==2.14.1 torchvision==0.29.1"
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
# torch first, in its own layer: it is most of the image and changes least often.
RUN pip install ${TORCH}

WORKDIR /srv/autoslim
COPY pyproject.toml README.md alembic.ini ./
COPY models ./models
COPY engine ./engine
COPY worker ./worker
COPY store ./store
COPY app ./app
COPY migrations ./migrations
RUN pip install .

# Searches write under /results and /checkpoints (named volumes take this ownership when created).
RUN useradd --create-home --uid 1000 autoslim \
    && mkdir -p /data /results /checkpoints \
    && chown autoslim:autoslim /results /checkpoints
USER autoslim
ENV AUTOSLIM_HOME=/home/autoslim/.autoslim

EXPOSE 8000
CMD ["autoslim", "serve", "--host", "0.0.0.0", "--port", "8000"]
