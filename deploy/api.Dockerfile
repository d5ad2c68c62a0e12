# syntax=docker/dockerfile:1.7
#
# kiln-api and the kiln CLI on Debian slim with the CPU build of libtorch (the API serves
# predictions on CPU; the CLI links kiln-ml too). Build from the repository root:
#
#   docker build -f deploy/api.Dockerfile \
#     --build-arg KILN_GIT_COMMIT="$(git rev-parse HEAD)" -t kiln-api .
#
# How the binaries find libtorch. tch links libtorch dynamically. With
# LIBTORCH_USE_PYTORCH=1, torch-sys asks the Python on PATH where torch lives, and kiln-ml's
# build script (crates/kiln-ml/link_libtorch.rs) bakes that directory,
# <venv>/lib/python3.11/site-packages/torch/lib, into every binary as its RUNPATH. That path
# exists only in the build stage, so the build stage rewrites the RUNPATH with patchelf to
# /opt/libtorch/torch/lib, and the runtime stage copies torch/lib there. No LD_LIBRARY_PATH
# is needed, and none is set: a RUNPATH names exactly one place, while LD_LIBRARY_PATH would
# also steer every other program in the image. `kiln-api --version` runs at the end of the
# runtime stage, so an image whose binaries cannot load libtorch fails to build.

# Two ways to an image, one runtime base:
#   target `runtime` (the default): compiles in the `build` stage (CI, docker buildx);
#   target `prebuilt`: packs binaries and a libtorch compiled outside (scripts/images.sh
#   stages them as prebuilt/ in its build context, from what the test command compiled), so
#   nothing compiles inside a container.
# Base images and the Python package index are build arguments (scripts/images.sh passes a
# local Debian base built with mmdebstrap); the defaults are the public ones.
# checkov:skip=CKV_DOCKER_7:FROM ${BUILD_IMAGE} and ${RUNTIME_IMAGE} are build arguments whose defaults are pinned tags; checkov cannot see through the argument
ARG BUILD_IMAGE=rust:1.94-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build

# g++ compiles torch-sys's C++ wrapper against the wheel's headers; python3-venv holds the
# torch wheel; patchelf rewrites the RUNPATH. None of them reaches the runtime image.
# Debian versions are not pinned: the mirror drops superseded versions at each point
# release, so a pin breaks the build at the next security update; the base image tag fixes
# the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ python3 python3-venv patchelf \
 && rm -rf /var/lib/apt/lists/*

# The CPU wheel of the torch that tch 0.26 links (scripts/env.sh installs the same version).
ENV VIRTUAL_ENV=/opt/torch-venv
ENV PATH=/opt/torch-venv/bin:$PATH \
    LIBTORCH_USE_PYTORCH=1
ARG PIP_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python3 -m venv /opt/torch-venv \
 && pip install --no-cache-dir --index-url "$PIP_INDEX_URL" torch==2.13.0

# The git commit kiln-ml records in model lineage (.git is not part of the build context).
ARG KILN_GIT_COMMIT=unknown
ENV KILN_GIT_COMMIT=$KILN_GIT_COMMIT

WORKDIR /src
COPY . .
# The target directory is a cache mount, so binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p kiln-api -p kiln-cli \
 && install -D -m 0755 target/release/kiln-api /out/bin/kiln-api \
 && install -D -m 0755 target/release/kiln /out/bin/kiln

# libtorch in the layout the runtime stage uses; the RUNPATH rewritten to match. Only the
# libraries a C++ program needs: libtorch_python (and libshm's helpers) serve Python only.
RUN torch_dir="$(python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
 && mkdir -p /out/libtorch/torch \
 && cp -a "$torch_dir/lib" /out/libtorch/torch/lib \
 && rm -rf /out/libtorch/torch/lib/libtorch_python.so /out/libtorch/torch/lib/libshm* \
 && for bin in /out/bin/*; do patchelf --set-rpath /opt/libtorch/torch/lib "$bin"; done

FROM ${RUNTIME_IMAGE} AS base

# ca-certificates: TLS to S3 and RDS; curl: the health check. Not pinned, see above.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin kiln \
 && install -d -o 10001 -g 10001 -m 0750 /var/cache/kiln

# Containers listen on every interface; the HEALTHCHECK below assumes port 8080. Bundles
# are cached under /var/cache/kiln (the user has no home directory): mount a writable
# volume there when the root file system is read-only (the chart and compose do).
ENV KILN_API_BIND=0.0.0.0:8080 \
    KILN_LOG_FORMAT=json \
    KILN_SERVING_CACHE_DIR=/var/cache/kiln/serving \
    OTEL_SERVICE_NAME=kiln-api

USER 10001:10001
EXPOSE 8080
# Liveness only: /readyz also needs PostgreSQL and the artifact store, which is the
# orchestrator's readiness question, not a reason to restart this container.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:8080/healthz >/dev/null || exit 1"]
ENTRYPOINT ["/usr/local/bin/kiln-api"]

# Binaries and libtorch compiled outside the image (scripts/images.sh): the same layout.
FROM base AS prebuilt
COPY prebuilt/libtorch /opt/libtorch
COPY prebuilt/bin/ /usr/local/bin/
RUN kiln-api --version && kiln --version

FROM base AS runtime
COPY --from=build /out/libtorch /opt/libtorch
COPY --from=build /out/bin/ /usr/local/bin/
RUN kiln-api --version && kiln --version
