# syntax=docker/dockerfile:1
# NanoLens: one image for every process. gateway, spectra, tem, ... are one Python distribution
# (pyproject.toml here) and differ only in the module they run, which is the image's argument:
#   CPU (default):  docker build -t ghcr.io/nanolens/nanolens:0.1.0 .
#   GPU:            docker build --target gpu -t ghcr.io/nanolens/nanolens-gpu:0.1.0 .
#   Run:            docker run ghcr.io/nanolens/nanolens:0.1.0 nanolens_spectra   (python -m nanolens_spectra)
# Serving images carry onnxruntime (cpu) or onnxruntime-gpu (gpu: CUDA 13 / cuDNN 9), never both,
# never torch. They run as UID 10001 on a read-only root filesystem; only /tmp must be writable.

# ---------------------------------------------------------------------------------------------
# The distribution's sources, listed once for both targets. Keep in step with pyproject.toml's
# [tool.setuptools.packages.find] and .dockerignore (tests/deploy/test_deploy_images.py checks).
FROM scratch AS source
COPY pyproject.toml /src/
COPY gen/python /src/gen/python
COPY runtime /src/runtime
COPY science /src/science
COPY formats /src/formats
COPY gateway /src/gateway
COPY services /src/services
COPY cli /src/cli
COPY clients/python /src/clients/python

# ---------------------------------------------------------------------------------------------
# GPU: CUDA 13 + cuDNN 9 runtime base. Python 3.11 comes from uv's relocatable CPython builds
# (the exact patch release is fixed by the pinned uv version).
FROM ghcr.io/astral-sh/uv:0.9.5 AS uv

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS build-gpu
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
RUN uv python install 3.11 && uv venv --python 3.11 /opt/venv
COPY --from=source /src /src
# uv compiles the bytecode at install time (UV_COMPILE_BYTECODE): nothing is written at run time.
RUN uv pip install --python /opt/venv/bin/python "/src[gpu]" \
    && uv pip check --python /opt/venv/bin/python

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS gpu
LABEL org.opencontainers.image.title="nanolens-gpu" \
      org.opencontainers.image.description="NanoLens gRPC services (onnxruntime-gpu, CUDA 13); argument: the module, e.g. nanolens_spectra" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 nanolens \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nanolens
COPY --from=build-gpu /opt/python /opt/python
COPY --from=build-gpu /opt/venv /opt/venv
# One BLAS thread per pool thread: the service's inference pool already uses every core.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    OPENBLAS_NUM_THREADS=1 \
    NANOLENS_ORT_PROVIDERS=cuda
# An empty, read-only working directory: nothing is read from or written to the cwd.
WORKDIR /srv/nanolens
USER 10001:10001
EXPOSE 50051 9100
# `python -m <module>`: the module is the argument (the chart passes each service's as args).
ENTRYPOINT ["python", "-m"]
CMD ["nanolens_gateway"]

# ---------------------------------------------------------------------------------------------
# CPU (default target, last): python:3.11-slim, onnxruntime.
FROM python:3.11.14-slim-bookworm AS build-cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=source /src /src
# pip compiles the bytecode at install time: nothing is written at run time.
RUN pip install --no-cache-dir "/src[cpu]" && pip check

FROM python:3.11.14-slim-bookworm AS cpu
LABEL org.opencontainers.image.title="nanolens" \
      org.opencontainers.image.description="NanoLens gRPC services (onnxruntime, CPU); argument: the module, e.g. nanolens_spectra" \
      org.opencontainers.image.licenses="Apache-2.0"
# tesseract reads the label of a micrograph's scale bar when the file states no pixel size (gateway)
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr=5.3.0-2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 nanolens \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nanolens
COPY --from=build-cpu /opt/venv /opt/venv
# One BLAS thread per pool thread: the service's inference pool already uses every core.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    OPENBLAS_NUM_THREADS=1 \
    NANOLENS_ORT_PROVIDERS=cpu
# An empty, read-only working directory: nothing is read from or written to the cwd.
WORKDIR /srv/nanolens
USER 10001:10001
EXPOSE 50051 9100
# `python -m <module>`: the module is the argument (the chart passes each service's as args).
ENTRYPOINT ["python", "-m"]
CMD ["nanolens_gateway"]
