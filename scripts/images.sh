#!/usr/bin/env bash
# Kiln's two container images, from deploy/api.Dockerfile and deploy/worker.Dockerfile.
#
#   scripts/images.sh build [--tag TAG] [--push PREFIX]
#       the Dockerfiles' default target (compiles inside the build stage), with
#       $KILN_IMAGE_ENGINE (docker: CI, .github/workflows/deploy.yaml; podman) and
#       $KILN_IMAGE_BUILD_FLAGS; --push PREFIX tags PREFIX/kiln-api:TAG and
#       PREFIX/kiln-worker:TAG and pushes them.
#   scripts/images.sh prebuilt [--tag TAG]
#       target `prebuilt` with podman: packs the binaries the test command already compiled
#       ($CARGO_TARGET_DIR/debug, debug info stripped, RUNPATH set to the image's libtorch)
#       and the libtorch of scripts/env.sh's virtualenv. Nothing compiles in a container.
#   scripts/images.sh smoke [--tag TAG]
#       `prebuilt`, then scripts/images-smoke.sh: the main job through the two containers.
#
# Here (no Docker engine, crun refused by the sandbox) podman runs with runc and a
# containers.conf without default ulimits, on a Debian base built from Debian's packages
# by mmdebstrap and imported as localhost/debian:bookworm-slim: nothing is pulled from a
# container registry. Build arguments choose the base images and the Python package index;
# their defaults are the public ones (docker.io, PyPI, the PyTorch CPU index).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"

mode="${1:-}"; shift || true
tag=dev push=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --push) push="$2"; shift 2 ;;
    *) echo "usage: $0 build|prebuilt|smoke [--tag TAG] [--push PREFIX]" >&2; exit 2 ;;
  esac
done
engine="${KILN_IMAGE_ENGINE:-podman}"
read -r -a build_flags <<<"${KILN_IMAGE_BUILD_FLAGS:-}"
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# podman as this sandbox allows it: runc, no default ulimits, host network.
KILN_IMAGES_DIR="${KILN_IMAGES_DIR:-$KILN_CACHE/images}"
export CONTAINERS_CONF="$KILN_IMAGES_DIR/containers.conf"
kiln_podman_setup() {
  command -v podman >/dev/null && command -v runc >/dev/null || kiln_apt_install podman runc >&2
  mkdir -p "$KILN_IMAGES_DIR"
  printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$CONTAINERS_CONF"
}
podman() { command podman --runtime runc "$@"; }

# localhost/debian:bookworm-slim from Debian's own packages (mmdebstrap), once.
kiln_debian_base() {
  if podman image exists localhost/debian:bookworm-slim; then return; fi
  command -v mmdebstrap >/dev/null || kiln_apt_install mmdebstrap >&2
  kiln_log "building a Debian bookworm base with mmdebstrap (minbase)"
  mmdebstrap --quiet --variant=minbase bookworm "$KILN_IMAGES_DIR/rootfs.tar" http://deb.debian.org/debian
  podman import "$KILN_IMAGES_DIR/rootfs.tar" localhost/debian:bookworm-slim >/dev/null
  rm -f "$KILN_IMAGES_DIR/rootfs.tar"
}

if [ "$mode" = build ]; then
  for image in api worker; do
    name="kiln-$image"; ref="${push:+$push/}$name:$tag"
    kiln_log "$engine build deploy/$image.Dockerfile -> $ref"
    args=(--build-arg KILN_GIT_COMMIT="$commit" -f "deploy/$image.Dockerfile" -t "$ref")
    if [ "$engine" = docker ]; then
      docker buildx build "${build_flags[@]}" "${args[@]}" ${push:+--push} .
    else
      kiln_podman_setup
      podman build --format docker --network=host "${build_flags[@]}" "${args[@]}" .
      [ -z "$push" ] || podman push "$ref"
    fi
  done
  exit 0
fi

[ "$mode" = prebuilt ] || [ "$mode" = smoke ] || { echo "usage: $0 build|prebuilt|smoke" >&2; exit 2; }
kiln_podman_setup
kiln_debian_base
kiln_ensure_libtorch
command -v patchelf >/dev/null || kiln_apt_install patchelf >&2
bin_dir="$CARGO_TARGET_DIR/debug"
for b in kiln-api kiln kiln-worker; do
  [ -x "$bin_dir/$b" ] || { kiln_log "$bin_dir/$b is missing: run the test command (or cargo build --bins) first"; exit 1; }
done

# The build context: prebuilt/bin (stripped, RUNPATH /opt/libtorch/torch/lib) and
# prebuilt/libtorch/{torch/lib,nvidia} (the virtualenv's, hard-linked: same layout as the
# Dockerfiles' build stage makes, so libtorch_cuda's $ORIGIN/../../nvidia paths resolve).
site=$("$KILN_PYTHON" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
ctx="$KILN_IMAGES_DIR/context"
rm -rf "$ctx" && mkdir -p "$ctx/prebuilt/bin" "$ctx/prebuilt/libtorch/torch"
cp -al "$site/torch/lib" "$ctx/prebuilt/libtorch/torch/lib" 2>/dev/null || cp -a "$site/torch/lib" "$ctx/prebuilt/libtorch/torch/lib"
cp -al "$site/nvidia" "$ctx/prebuilt/libtorch/nvidia" 2>/dev/null || cp -a "$site/nvidia" "$ctx/prebuilt/libtorch/nvidia"
rm -rf "$ctx/prebuilt/libtorch/torch/lib/libtorch_python.so" "$ctx"/prebuilt/libtorch/torch/lib/libshm*
for b in kiln-api kiln kiln-worker; do
  objcopy --strip-debug "$bin_dir/$b" "$ctx/prebuilt/bin/$b"
  patchelf --set-rpath /opt/libtorch/torch/lib "$ctx/prebuilt/bin/$b"
done
base=(--build-arg RUNTIME_IMAGE=localhost/debian:bookworm-slim --build-arg KILN_GIT_COMMIT="$commit")
for image in api worker; do
  kiln_log "podman build --target prebuilt deploy/$image.Dockerfile -> localhost/kiln-$image:$tag"
  podman build --format docker --network=host --target prebuilt "${base[@]}" -f "deploy/$image.Dockerfile" \
    -t "localhost/kiln-$image:$tag" "$ctx" >"$KILN_IMAGES_DIR/build-$image.log" 2>&1 ||
    { tail -n 30 "$KILN_IMAGES_DIR/build-$image.log" >&2; exit 1; }
done
rm -rf "$ctx"
for image in api worker; do
  size=$(podman image inspect --format '{{.Size}}' "localhost/kiln-$image:$tag")
  kiln_log "localhost/kiln-$image:$tag: $((size / 1024 / 1024)) MiB"
done
[ "$mode" = smoke ] || exit 0
exec bash scripts/images-smoke.sh "$tag"
