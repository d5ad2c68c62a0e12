# syntax=docker/dockerfile:1.7
#
# kiln-worker on an NVIDIA CUDA base with the CUDA build of libtorch. Build from the
# repository root:
#
#   docker build -f deploy/worker.Dockerfile \
#     --build-arg KILN_GIT_COMMIT="$(git rev-parse HEAD)" -t kiln-worker .
#
# How the binary finds libtorch and CUDA. PyPI's torch==2.13.0 wheel is the CUDA 13 build:
# torch/lib holds libtorch_cuda, and the CUDA libraries it needs (cuBLAS, cuDNN, NCCL...)
# come as nvidia-* wheels beside it in site-packages/nvidia/, found through libtorch_cuda's
# own RPATH `$ORIGIN/../../nvidia/<lib>/lib`. With LIBTORCH_USE_PYTORCH=1 the build bakes
# <venv>/.../site-packages/torch/lib into kiln-worker as its RUNPATH (see
# crates/kiln-ml/link_libtorch.rs, which also keeps libtorch_cuda linked). The runtime stage
# copies torch/lib and nvidia/ to /opt/libtorch/torch/lib and /opt/libtorch/nvidia — the
# same relative layout, so libtorch_cuda's $ORIGIN paths still resolve — and the build stage
# rewrites the binary's RUNPATH to /opt/libtorch/torch/lib with patchelf. No LD_LIBRARY_PATH
# of ours is needed. The GPU driver (libcuda.so.1) is not in the image: the NVIDIA container
# runtime mounts the node's at start, as for every CUDA container.
#
# Why the `base` flavour of nvidia/cuda and not `runtime`: the torch wheels bring every CUDA
# library libtorch uses, in the versions it was built with; the `runtime` flavour would add a
# second copy of cuBLAS and friends (gigabytes) that nothing loads. `base` carries what the
# NVIDIA container runtime keys on (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, the
# CUDA version requirement checked against the node's driver).

# Two ways to an image, one runtime base (see api.Dockerfile): target `runtime` (default)
# compiles in the `build` stage; target `prebuilt` packs binaries and libtorch compiled
# outside (scripts/images.sh). Base images and the package index are build arguments.
# checkov:skip=CKV_DOCKER_7:FROM ${BUILD_IMAGE} and ${RUNTIME_IMAGE} are build arguments whose defaults are pinned tags; checkov cannot see through the argument
ARG BUILD_IMAGE=rust:1.94-slim-bookworm
ARG RUNTIME_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04

FROM ${BUILD_IMAGE} AS build

# g++ compiles torch-sys's C++ wrapper; python3-venv holds the wheels; patchelf rewrites the
# RUNPATH. None of them reaches the runtime image. Debian versions are not pinned: the mirror
# drops superseded versions at each point release, so a pin breaks the build at the next
# security update; the base image tag fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ python3 python3-venv patchelf \
 && rm -rf /var/lib/apt/lists/*

# PyPI's default torch 2.13.0 wheel: the CUDA 13 build, with its nvidia-* dependencies.
ENV VIRTUAL_ENV=/opt/torch-venv
ENV PATH=/opt/torch-venv/bin:$PATH \
    LIBTORCH_USE_PYTORCH=1
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN python3 -m venv /opt/torch-venv \
 && pip install --no-cache-dir --index-url "$PIP_INDEX_URL" torch==2.13.0

# The git commit kiln-ml records in model lineage (.git is not part of the build context).
ARG KILN_GIT_COMMIT=unknown
ENV KILN_GIT_COMMIT=$KILN_GIT_COMMIT

WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p kiln-worker \
 && install -D -m 0755 target/release/kiln-worker /out/bin/kiln-worker

# libtorch and the CUDA wheels in the layout described above; libtorch_python (and libshm's
# helpers) serve Python only.
RUN site="$(python -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')" \
 && mkdir -p /out/libtorch/torch \
 && cp -a "$site/torch/lib" /out/libtorch/torch/lib \
 && cp -a "$site/nvidia" /out/libtorch/nvidia \
 && rm -rf /out/libtorch/torch/lib/libtorch_python.so /out/libtorch/torch/lib/libshm* \
 && patchelf --set-rpath /opt/libtorch/torch/lib /out/bin/kiln-worker

FROM ${RUNTIME_IMAGE} AS base

# ca-certificates: TLS to S3 and RDS. Not pinned, see above.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/kiln \
      --shell /usr/sbin/nologin kiln \
 && install -d -o 10001 -g 10001 -m 0750 /var/cache/kiln

# On a GPU node the chart sets KILN_WORKER_DEVICE=cuda (auto would fall back to the CPU
# silently when the GPU is missing). Datasets are cached under the home directory unless
# KILN_WORKER_CACHE_DIR says otherwise (the chart mounts an emptyDir at /var/cache/kiln).
ENV KILN_LOG_FORMAT=json \
    KILN_WORKER_CACHE_DIR=/home/kiln/cache \
    OTEL_SERVICE_NAME=kiln-worker

USER 10001:10001
WORKDIR /home/kiln
# The worker's HTTP is its metrics listener only (KILN_WORKER_METRICS_BIND, off by default):
# its liveness is its heartbeat in PostgreSQL (`kiln workers list`), and a worker that
# dies ends the container. This check only tells a stopped or zombie process (State T or
# Z) from a running one.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/bin/sh", "-c", "grep -Eq '^State:[[:space:]]+[RSD]' /proc/1/status || exit 1"]
ENTRYPOINT ["/usr/local/bin/kiln-worker"]

# The binary and libtorch (+ the CUDA wheels) compiled outside (scripts/images.sh).
FROM base AS prebuilt
COPY prebuilt/libtorch /opt/libtorch
COPY prebuilt/bin/kiln-worker /usr/local/bin/kiln-worker
RUN kiln-worker --version

FROM base AS runtime
COPY --from=build /out/libtorch /opt/libtorch
COPY --from=build /out/bin/kiln-worker /usr/local/bin/kiln-worker
# Loads libtorch and libtorch_cuda (no GPU needed): a broken layout fails the build here.
RUN kiln-worker --version
