# reidx on a CUDA machine: `docker build -t reidx .` then
#   docker run --gpus all -v "$PWD/data:/data" reidx prepare --dataset market1501 --root /data/Market-1501 \
#       --downsample 2,3,4 --out /data/mlr-market
# The image installs exactly the package set that pyproject.toml declares (tests/test_packaging.py checks it).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY reidx ./reidx
RUN pip install .

WORKDIR /data
ENTRYPOINT ["reidx"]
CMD ["--help"]
