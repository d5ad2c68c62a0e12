#!/usr/bin/env bash
# Kiln's shared set-up, sourced by scripts/test.sh, scripts/quickstart.sh and benchmarks.
#
# It installs what is missing and starts what must run, reusing everything it installed
# before (under $KILN_CACHE, outside the repository):
#   kiln_ensure_postgres  a PostgreSQL that answers at $KILN_TEST_DATABASE_URL
#   kiln_ensure_libtorch  a virtualenv with torch==2.13.0 for tch (LIBTORCH_USE_PYTORCH=1)
#   kiln_ensure_s3s       the s3s-fs S3-compatible test server binary
#   kiln_ensure_awscli    the AWS CLI, the artifact-store benchmark's baseline
#   kiln_ensure_sdk_venv  a virtualenv for the Python SDK's tests (clients/python)
#   kiln_ensure_openapi_python_client  openapi-python-client, for the generated-client check
#   kiln_ensure_mlflow_venv / kiln_ensure_oip_venv  the stock mlflow / tritonclient+kserve clients
#   kiln_ensure_ui_browser  headless Chromium, chromedriver and Selenium, for the web UI's browser tests
# Every function is idempotent. Source it: `. scripts/env.sh`.

KILN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KILN_ROOT
export KILN_CACHE="${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
mkdir -p "$KILN_CACHE"
export PATH="$HOME/.cargo/bin:$PATH"
export KILN_TEST_DATABASE_URL="${KILN_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# Build outputs live beside the other caches, so a second run (or CI on the same machine)
# reuses them; set CARGO_TARGET_DIR to override.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KILN_CACHE/target}"

kiln_log() { printf '[kiln] %s\n' "$*" >&2; }

kiln_apt_install() {
  if [ "$(id -u)" != 0 ]; then
    kiln_log "need root to apt-get install $*; install them yourself and re-run"; return 1
  fi
  if [ ! -f "$KILN_CACHE/.apt-updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && touch "$KILN_CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# True when a PostgreSQL answers at the URL.
kiln_pg_answers() {
  command -v psql >/dev/null 2>&1 || return 1
  psql "$1" -XAtqc 'select 1' >/dev/null 2>&1
}

# The directory holding initdb/pg_ctl, installing PostgreSQL when there is none.
kiln_pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    kiln_log "installing PostgreSQL with apt-get"
    kiln_apt_install postgresql postgresql-client >&2 || return 1
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  printf '%s\n' "$dir"
}

# Where the private cluster asked for at $1 really lives. As root the server runs as user
# `postgres` (initdb refuses root), who must be able to reach the data directory: a clone in
# root's 0700 home directory is out of its reach, so there the data goes to
# /var/tmp/kiln-postgres-<hash of $1>/ and $1 becomes a symlink to it (the link records the
# place, and `ls -l` shows it). A path that is already a cluster, or a link to one, stays.
kiln_private_pg_datadir() {
  local data="$1" parent hash
  if [ -L "$data" ]; then readlink -f "$data"; return; fi
  if [ -f "$data/PG_VERSION" ] || [ "$(id -u)" != 0 ]; then printf '%s\n' "$data"; return; fi
  parent=$(dirname "$data")
  mkdir -p "$parent"
  # Search permission on the parent implies it on every directory above it.
  if runuser -u postgres -- test -x "$parent" 2>/dev/null; then printf '%s\n' "$data"; return; fi
  hash=$(printf '%s' "$(cd "$parent" && pwd -P)/$(basename "$data")" | sha256sum | cut -c1-16)
  printf '%s\n' "/var/tmp/kiln-postgres-$hash"
}

# Starts (creating on first use) a private cluster at $1 on port $2, trust auth, loopback
# only. Runs as the `postgres` user when we are root (initdb refuses root); see
# kiln_private_pg_datadir for where its files go then.
kiln_start_private_postgres() {
  local data="$1" port="$2" bindir as=() real
  bindir=$(kiln_pg_bindir) || return 1
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    as=(runuser -u postgres --)
  fi
  real=$(kiln_private_pg_datadir "$data")
  if [ "$real" != "$data" ] && [ ! -L "$data" ]; then
    # Out of postgres's reach: the cluster lives at $real, owned by postgres, mode 0700.
    # /var/tmp is world-writable, so a directory someone else made there is refused.
    if [ -e "$real" ] && [ "$(stat -c %U "$real")" != postgres ]; then
      kiln_log "$real exists and is not owned by postgres; remove it or set KILN_DATABASE_URL"; return 1
    fi
    install -d -o postgres -m 0700 "$real"
    rmdir "$data" 2>/dev/null || true
    [ -e "$data" ] && { kiln_log "$data is in the way of the link to $real"; return 1; }
    ln -s "$real" "$data"
    kiln_log "user postgres cannot reach $(dirname "$data"); its data lives in $real ($data links there)"
  fi
  mkdir -p "$real"
  [ "$(id -u)" = 0 ] && chown postgres "$real"
  if [ ! -f "$real/PG_VERSION" ]; then
    kiln_log "creating a private PostgreSQL cluster in $real"
    "${as[@]}" "$bindir/initdb" -D "$real" -U postgres --auth=trust -E UTF8 >/dev/null || return 1
  fi
  if ! "${as[@]}" "$bindir/pg_ctl" -D "$real" status >/dev/null 2>&1; then
    kiln_log "starting PostgreSQL on 127.0.0.1:$port"
    "${as[@]}" "$bindir/pg_ctl" -D "$real" -l "$real/server.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=400 -c fsync=off" \
      start >/dev/null || { tail -n 20 "$real/server.log" >&2; return 1; }
  fi
}

# Stops the private cluster started at $1 (if it runs).
kiln_stop_private_postgres() {
  local real bindir as=()
  real=$(kiln_private_pg_datadir "$1")
  [ -f "$real/PG_VERSION" ] || return 0
  bindir=$(kiln_pg_bindir) || return 1
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$bindir/pg_ctl" -D "$real" -m fast stop >/dev/null 2>&1 && kiln_log "stopped PostgreSQL" || true
}

# Makes sure a PostgreSQL answers at $KILN_TEST_DATABASE_URL: the one given, or a private
# cluster under $KILN_CACHE started (and installed) here.
kiln_ensure_postgres() {
  command -v psql >/dev/null 2>&1 || kiln_apt_install postgresql-client >&2
  if kiln_pg_answers "$KILN_TEST_DATABASE_URL"; then return 0; fi
  kiln_log "no PostgreSQL answers at $KILN_TEST_DATABASE_URL; starting a private one"
  kiln_start_private_postgres "$KILN_CACHE/postgres/data" 55432 || return 1
  export KILN_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:55432/postgres"
  kiln_pg_answers "$KILN_TEST_DATABASE_URL"
}

# A virtualenv with torch==2.13.0 (what tch 0.26 links against), outside the repository.
kiln_ensure_libtorch() {
  local venv="$KILN_CACHE/venv"
  if ! "$venv/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    kiln_log "installing torch==2.13.0 into $venv (about 5 GB, once)"
    python3 -m venv "$venv" || { kiln_apt_install python3-venv python3-pip >&2 && python3 -m venv "$venv"; } || return 1
    "$venv/bin/pip" install -q --upgrade pip >&2
    "$venv/bin/pip" install -q torch==2.13.0 numpy >&2 || return 1
  fi
  export PATH="$venv/bin:$PATH"
  export LIBTORCH_USE_PYTORCH=1
  export KILN_PYTHON="$venv/bin/python"
}

# The s3s-fs S3-compatible server (checks SigV4 signatures), built once into the cache.
kiln_ensure_s3s() {
  local root="$KILN_CACHE/s3s"
  if [ ! -x "$root/bin/s3s-fs" ]; then
    kiln_log "installing s3s-fs 0.14.1 into $root (once)"
    cargo install s3s-fs@0.14.1 --features binary --locked --root "$root" >&2 || return 1
  fi
  export KILN_S3S_FS="$root/bin/s3s-fs"
}

# When the libtorch virtualenv exists, every cargo call must see it: torch-sys's build
# script reruns (and fails) whenever LIBTORCH_USE_PYTORCH or the Python on PATH changes.
if [ -x "$KILN_CACHE/venv/bin/python" ]; then
  export PATH="$KILN_CACHE/venv/bin:$PATH"
  export LIBTORCH_USE_PYTORCH=1
  export KILN_PYTHON="$KILN_CACHE/venv/bin/python"
fi
# The AWS CLI (v1, from PyPI) in its own virtualenv: the baseline of the artifact-store
# benchmark (scripts/bench-store.sh).
kiln_ensure_awscli() {
  local venv="$KILN_CACHE/awscli"
  if [ ! -x "$venv/bin/aws" ]; then
    kiln_log "installing awscli into $venv (once)"
    python3 -m venv "$venv" || { kiln_apt_install python3-venv python3-pip >&2 && python3 -m venv "$venv"; } || return 1
    "$venv/bin/pip" install -q awscli >&2 || return 1
  fi
  export KILN_AWS_CLI="$venv/bin/aws"
}

# The Python SDK's test virtualenv: the SDK's dependencies (clients/python/pyproject.toml)
# and pytest; torch comes from the libtorch virtualenv through a .pth file (never
# downloaded twice). Installs the SDK itself from clients/python when $1 is a wheel or a
# directory. Sets KILN_SDK_PYTHON.
kiln_ensure_sdk_venv() {
  local venv="$KILN_CACHE/sdk-venv" torch_site site
  kiln_ensure_libtorch || return 1
  if [ ! -x "$venv/bin/python" ]; then
    kiln_log "creating the SDK test virtualenv $venv (once)"
    "$KILN_CACHE/venv/bin/python" -m venv "$venv" || return 1
  fi
  torch_site=$("$KILN_CACHE/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n' "$torch_site" >"$site/kiln-libtorch.pth"
  if ! "$venv/bin/python" -c 'import httpx, pandas, tqdm, pytest, torch' 2>/dev/null; then
    kiln_log "installing the SDK's dependencies and pytest into $venv (once)"
    "$venv/bin/pip" install -q "$KILN_ROOT/clients/python[test]" >&2 || return 1
  fi
  if [ -n "${1:-}" ]; then
    # The SDK itself always anew (same version, new code), then any dependency it gained.
    "$venv/bin/pip" install -q --no-deps --force-reinstall "$1" >&2 || return 1
    "$venv/bin/pip" install -q "$1" >&2 || return 1
  fi
  export KILN_SDK_PYTHON="$venv/bin/python"
}

# The stock clients of the compatible surfaces, each in its own virtualenv (their pins never
# meet the SDK's or each other's); torch comes from the libtorch virtualenv through a .pth
# file. Sets KILN_MLFLOW_PYTHON / KILN_OIP_PYTHON.
KILN_MLFLOW_VERSION="3.17.2"
kiln_ensure_mlflow_venv() {
  local venv="$KILN_CACHE/mlflow-client" torch_site site
  kiln_ensure_libtorch || return 1
  [ -x "$venv/bin/python" ] || "$KILN_CACHE/venv/bin/python" -m venv "$venv" || return 1
  torch_site=$("$KILN_CACHE/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n' "$torch_site" >"$site/kiln-libtorch.pth"
  if [ "$("$venv/bin/python" -c 'import mlflow, pytest, matplotlib, psycopg2; print(mlflow.__version__)' 2>/dev/null)" != "$KILN_MLFLOW_VERSION" ]; then
    kiln_log "installing mlflow==$KILN_MLFLOW_VERSION, pytest, matplotlib into $venv (once)"
    "$venv/bin/pip" install -q "mlflow==$KILN_MLFLOW_VERSION" pytest matplotlib psycopg2-binary httpx >&2 || return 1
  fi
  export KILN_MLFLOW_PYTHON="$venv/bin/python"
}

KILN_TRITONCLIENT_VERSION="2.73.0" KILN_KSERVE_VERSION="0.21.0"
kiln_ensure_oip_venv() {
  local venv="$KILN_CACHE/oip-client"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || { kiln_apt_install python3-venv python3-pip >&2 && python3 -m venv "$venv"; } || return 1
  if ! "$venv/bin/python" -c 'import tritonclient.http, kserve, pytest, numpy, httpx' 2>/dev/null; then
    kiln_log "installing tritonclient[http]==$KILN_TRITONCLIENT_VERSION, kserve==$KILN_KSERVE_VERSION, pytest into $venv (once)"
    "$venv/bin/pip" install -q "tritonclient[http]==$KILN_TRITONCLIENT_VERSION" "kserve==$KILN_KSERVE_VERSION" pytest numpy httpx >&2 || return 1
  fi
  export KILN_OIP_PYTHON="$venv/bin/python"
}

# Headless Chromium and its WebDriver (Debian's chromium and chromium-driver; installed with
# apt-get only when missing, never downloaded from elsewhere), and Selenium (PyPI) with Pillow
# for the screenshots' checks in their own virtualenv: the web UI's browser tests
# (scripts/check-ui.sh) and benchmark (scripts/bench-ui.sh).
KILN_SELENIUM_VERSION="4.51.0"
kiln_ensure_ui_browser() {
  local venv="$KILN_CACHE/ui-browser"
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    kiln_log "installing chromium and chromium-driver with apt-get"
    kiln_apt_install chromium chromium-driver >&2 || return 1
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || { kiln_apt_install python3-venv python3-pip >&2 && python3 -m venv "$venv"; } || return 1
  if [ "$("$venv/bin/python" -c 'import selenium, PIL; print(selenium.__version__)' 2>/dev/null)" != "$KILN_SELENIUM_VERSION" ]; then
    kiln_log "installing selenium==$KILN_SELENIUM_VERSION and pillow into $venv (once)"
    "$venv/bin/pip" install -q "selenium==$KILN_SELENIUM_VERSION" pillow >&2 || return 1
  fi
  export KILN_UI_PYTHON="$venv/bin/python"
  export KILN_CHROMIUM="$(command -v chromium)" KILN_CHROMEDRIVER="$(command -v chromedriver)"
}

# Python tools the checks use (schemathesis; the deploy linters), in their own virtualenv
# so their dependencies never meet torch's. KILN_PYTOOLS_VENV picks another virtualenv for
# tools whose pins clash with these (scripts/check-deploy.sh: checkov wants packaging<24).
kiln_ensure_pytool() {
  local venv="${KILN_PYTOOLS_VENV:-$KILN_CACHE/tools}" package="$1" binary="$2"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || { kiln_apt_install python3-venv python3-pip >&2 && python3 -m venv "$venv"; } || return 1
  if [ ! -x "$venv/bin/$binary" ]; then
    kiln_log "installing $package into $venv (once)"
    "$venv/bin/pip" install -q "$package" >&2 || return 1
  fi
}

# openapi-python-client (pinned) in its own virtualenv, $KILN_CACHE/openapi-python-client:
# scripts/check-openapi-client.sh generates a Python client from docs/api/openapi.json with
# it. The generated package's own dependencies (httpx, attrs, python-dateutil) come with it,
# so the same virtualenv imports what it generated.
KILN_OPENAPI_PYTHON_CLIENT_VERSION="0.29.1"
kiln_ensure_openapi_python_client() {
  local venv="$KILN_CACHE/openapi-python-client"
  if [ -x "$venv/bin/openapi-python-client" ] &&
     [ "$("$venv/bin/openapi-python-client" --version 2>/dev/null | awk '{print $NF}')" = "$KILN_OPENAPI_PYTHON_CLIENT_VERSION" ]; then
    return 0
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || { kiln_apt_install python3-venv python3-pip >&2 && python3 -m venv "$venv"; } || return 1
  kiln_log "installing openapi-python-client==$KILN_OPENAPI_PYTHON_CLIENT_VERSION into $venv (once)"
  "$venv/bin/pip" install -q "openapi-python-client==$KILN_OPENAPI_PYTHON_CLIENT_VERSION" >&2 || return 1
}

# A free TCP port on 127.0.0.1.
# A free TCP port on 127.0.0.1, chosen at random below the kernel's ephemeral range: two
# calls before either port is bound (quickstart's PostgreSQL and API ports) must not get the
# same one, which bind(0) would readily hand out again once the first probe closed.
kiln_free_port() {
  python3 -c '
import random, socket
for _ in range(200):
    port = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port found in 20000-32000")
'
}

# Polls URL until it answers 2xx, for at most $2 seconds (default 60).
kiln_wait_http() {
  local url="$1" limit="${2:-60}" i=0
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -le $((limit * 5)) ] || { kiln_log "$url did not answer within ${limit}s"; return 1; }
    sleep 0.2
  done
}
