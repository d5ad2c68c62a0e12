#!/usr/bin/env bash
# The OpenAPI document generates a working client: openapi-python-client (the version
# pinned in env.sh) generates a Python package from docs/api/openapi.json (or the document
# given as $1), and this fails on any warning or error it prints, on any operation of the
# document without its generated module, and unless every generated module imports.
# Called by scripts/test.sh; runs alone too (a few seconds once the tool is installed).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_openapi_python_client
venv="$KILN_CACHE/openapi-python-client"
doc=$(readlink -f "${1:-docs/api/openapi.json}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# No post hooks: formatting the generated code (ruff) is slow and says nothing about it.
cat >"$work/config.yaml" <<'EOF'
project_name_override: kiln-api-client
package_name_override: kiln_api_client
post_hooks: []
EOF
status=0
(cd "$work" && "$venv/bin/openapi-python-client" generate --path "$doc" --config config.yaml \
  --meta none --output-path kiln_api_client) >"$work/generate.log" 2>&1 || status=$?
# The generator reports a schema or endpoint it could not handle as a warning or an error
# and leaves it out (status 0): any such line fails the check.
if [ "$status" != 0 ] || grep -qiE 'warning|error|will not be generated|unable to|removal of' "$work/generate.log"; then
  kiln_log "openapi-python-client did not generate a clean client from $doc (status $status):"
  cat "$work/generate.log" >&2
  exit 1
fi

# Every operation of the document has its module, and every module imports.
"$venv/bin/python" - "$doc" "$work" <<'EOF'
import importlib, json, keyword, pkgutil, re, sys

doc_path, work = sys.argv[1], sys.argv[2]
sys.path.insert(0, work)
doc = json.load(open(doc_path))
methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
operations = [(path, method, op) for path, item in doc["paths"].items()
              for method, op in item.items() if method in methods]

def snake(name):
    name = re.sub(r"[^a-z0-9]+", "_", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()).strip("_")
    return name + "_" if keyword.iskeyword(name) else name

import kiln_api_client
modules = {}
for info in pkgutil.walk_packages(kiln_api_client.__path__, "kiln_api_client."):
    modules[info.name] = importlib.import_module(info.name)
missing = []
for path, method, op in operations:
    tag = snake((op.get("tags") or ["default"])[0])
    name = f"kiln_api_client.api.{tag}.{snake(op['operationId'])}"
    module = modules.get(name)
    if module is None or not hasattr(module, "sync_detailed"):
        missing.append(f"{method.upper()} {path} ({name})")
if missing:
    print("operations without a generated client function:\n  " + "\n  ".join(missing), file=sys.stderr)
    sys.exit(1)
print(f"openapi-python-client: {len(operations)} operations generated, {len(modules)} modules import")
EOF
