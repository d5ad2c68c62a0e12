"""Fixtures for the Open Inference Protocol tests: the stock ``tritonclient[http]`` and
``kserve`` clients (from the package index, scripts/env.sh's ``kiln_ensure_oip_venv``)
against a real Kiln stack, e.g. the one ``scripts/quickstart.sh`` starts
(``scripts/check-oip.sh`` runs this suite against it).

They need ``KILN_API_URL`` and ``KILN_ADMIN_TOKEN`` (``. .kiln/env`` after the quickstart).
The session makes its own teams with the admin token, uploads ``data/iris.csv`` and
``data/wine.csv``, trains a classifier (iris ``species``) and a regressor (wine ``alcohol``,
with the categorical ``cultivar`` among its inputs) through the native API on the stack's
worker, registers and deploys them: nothing of another run is seen. Without the two
variables every test errors (never skips).
"""

from __future__ import annotations

import csv
import os
import pathlib
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
import tritonclient.http as triton
from tritonclient._plugin import InferenceServerClientPlugin

ROOT = pathlib.Path(__file__).resolve().parents[3]
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/check-oip.sh against a Kiln stack", pytrace=False)
    return value


class Team:
    """A team of its own on the stack under test, with one token per role."""

    def __init__(self, url: str, admin: httpx.Client, prefix: str) -> None:
        self.url = url
        self.name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        answer = admin.post("/v1/teams", json={"name": self.name})
        answer.raise_for_status()
        self.id = answer.json()["id"]
        self.tokens = {}
        for role in ("viewer", "member", "maintainer"):
            answer = admin.post(f"/v1/teams/{self.id}/tokens", json={"name": f"oip-{role}", "role": role})
            answer.raise_for_status()
            self.tokens[role] = answer.json()["token"]

    def http(self, role: str = "maintainer") -> httpx.Client:
        """Kiln's native API as this team."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=60)


@dataclass
class Deployment:
    name: str
    version: int
    rows: list[dict]


def _train_and_deploy(team: Team, csv_name: str, spec: dict, deployment: str) -> int:
    """Uploads data/<csv_name>, trains a job on the stack's worker, registers it as model
    ``deployment`` and deploys it under the same name; returns the version."""
    http = team.http()
    data = (ROOT / "data" / csv_name).read_bytes()
    answer = http.post(f"/v1/datasets?name={csv_name.removesuffix('.csv')}", content=data,
                       headers={"content-type": "text/csv"})
    answer.raise_for_status()
    job = http.post("/v1/jobs", json={"dataset_id": answer.json()["id"], "device": "cpu", **spec})
    job.raise_for_status()
    job_id = job.json()["id"]
    deadline = time.monotonic() + 600
    while True:
        state = http.get(f"/v1/jobs/{job_id}").json()
        if state["state"] == "succeeded":
            break
        assert state["state"] not in ("failed", "cancelled"), state
        assert time.monotonic() < deadline, f"job {job_id} still {state['state']} after 10 minutes"
        time.sleep(0.5)
    version = http.post(f"/v1/models/{deployment}/versions", json={"job_id": job_id})
    version.raise_for_status()
    number = version.json()["version"]
    created = http.post("/v1/deployments", json={"name": deployment, "model": deployment, "version": number})
    assert created.status_code == 201, created.text
    return number


def _rows(csv_name: str, target: str) -> list[dict]:
    with open(ROOT / "data" / csv_name, newline="") as f:
        rows = []
        for record in csv.DictReader(f):
            record.pop(target)
            rows.append({k: (v if k == "cultivar" else float(v)) for k, v in record.items()})
        return rows


@pytest.fixture(scope="session")
def kiln_url() -> str:
    return _need("KILN_API_URL").rstrip("/")


@pytest.fixture(scope="session")
def admin(kiln_url: str) -> httpx.Client:
    token = _need("KILN_ADMIN_TOKEN")
    return httpx.Client(base_url=kiln_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture(scope="session")
def team(kiln_url: str, admin: httpx.Client) -> Team:
    return Team(kiln_url, admin, "oip")


@pytest.fixture(scope="session")
def other_team(kiln_url: str, admin: httpx.Client) -> Team:
    return Team(kiln_url, admin, "oip-other")


@pytest.fixture(scope="session")
def iris(team: Team) -> Deployment:
    """An iris classifier, deployed as ``iris``."""
    spec = {"task": "classification", "target": "species", "model": {"type": "mlp", "hidden": [16]},
            "hyperparameters": {"epochs": 30, "batch_size": 16, "learning_rate": 0.01, "seed": 3}}
    version = _train_and_deploy(team, "iris.csv", spec, "iris")
    return Deployment("iris", version, _rows("iris.csv", "species"))


@pytest.fixture(scope="session")
def wine(team: Team) -> Deployment:
    """A regressor of wine's ``alcohol`` (``cultivar`` is a categorical input), as ``alcohol``."""
    spec = {"task": "regression", "target": "alcohol", "model": {"type": "mlp", "hidden": [16]},
            "hyperparameters": {"epochs": 20, "batch_size": 16, "learning_rate": 0.01, "seed": 3}}
    version = _train_and_deploy(team, "wine.csv", spec, "alcohol")
    return Deployment("alcohol", version, _rows("wine.csv", "alcohol"))


class Bearer(InferenceServerClientPlugin):
    """tritonclient's plugin hook (like its own ``BasicAuth``): the Kiln token on every call."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"


@pytest.fixture
def triton_client(kiln_url: str):
    """``triton_client(token)``: the stock ``tritonclient.http`` client (``host:port``, no
    scheme, as it wants) sending that token."""
    made = []

    def make(token: str | None) -> triton.InferenceServerClient:
        client = triton.InferenceServerClient(url=urlsplit(kiln_url).netloc)
        if token is not None:
            client.register_plugin(Bearer(token))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def native_predict(team: Team, deployment: str, rows: list[dict]) -> list[dict]:
    """The native route's predictions for ``rows``."""
    answer = team.http("member").post(f"/v1/deployments/{deployment}/predict", json={"instances": rows})
    answer.raise_for_status()
    return answer.json()["predictions"]
