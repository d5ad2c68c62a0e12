#!/usr/bin/env bash
# `helm upgrade --install` of deploy/helm/kiln into the cluster of terraform/environments/dev,
# with the values that environment's terraform outputs give (helm_values) and the image tag
# CI just pushed. .github/workflows/deploy.yaml runs it; an operator can too.
#
#   scripts/ci-deploy.sh TAG
#
# Needs: AWS credentials (CI: the OIDC role of terraform's `ci` module), terraform, helm,
# the AWS CLI, and the state of the environment in S3 (TF_STATE_BUCKET, TF_STATE_KEY;
# unset: the local state of terraform/environments/dev). The namespace and its database
# Secret exist already (docs/deploy-aws.md, step 3): the chart never creates secrets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag="${1:?usage: $0 TAG}"
env_dir=terraform/environments/dev
namespace="${KILN_NAMESPACE:-kiln}"
release="${KILN_RELEASE:-kiln}"

if [ -n "${TF_STATE_BUCKET:-}" ]; then
  # versions.tf keeps its S3 backend commented out for a first, local apply; an override
  # file declares it for this run only (Terraform merges *_override.tf files).
  cat >"$env_dir/ci_backend_override.tf" <<'TF'
terraform {
  backend "s3" {}
}
TF
  trap 'rm -f "$env_dir/ci_backend_override.tf"' EXIT
  terraform -chdir="$env_dir" init -input=false -reconfigure \
    -backend-config="bucket=$TF_STATE_BUCKET" -backend-config="key=${TF_STATE_KEY:?}" \
    -backend-config="region=${AWS_REGION:?}" -backend-config="use_lockfile=true" >/dev/null
else
  terraform -chdir="$env_dir" init -input=false >/dev/null
fi

out() { terraform -chdir="$env_dir" output -raw "$1"; }
values=$(mktemp)
trap 'rm -f "$values" "$env_dir/ci_backend_override.tf"' EXIT
out helm_values >"$values"
region=$(out region)
cluster=$(out cluster_name)

aws eks update-kubeconfig --region "$region" --name "$cluster" >/dev/null
echo "deploying $tag to $cluster, namespace $namespace"
helm upgrade --install "$release" deploy/helm/kiln --namespace "$namespace" \
  -f "$values" --set image.api.tag="$tag" --set image.worker.tag="$tag" \
  --wait --timeout 15m --atomic
kubectl -n "$namespace" rollout status "deploy/$release-api" --timeout 5m
if kubectl -n "$namespace" get "deploy/$release-serving" >/dev/null 2>&1; then
  kubectl -n "$namespace" rollout status "deploy/$release-serving" --timeout 5m
fi
echo "deployed $tag"
