"""Fixtures for the SDK's tests, which run against a real Kiln: kiln-api, kiln-worker and
PostgreSQL, e.g. the stack ``scripts/quickstart.sh`` starts (``scripts/test.sh`` runs this
suite against it). They need:

- ``KILN_API_URL``: the API;
- ``KILN_ADMIN_TOKEN``: an admin token, to make this session's own team and its tokens
  (viewer, member, maintainer), so the tests never see another run's resources.

``. .kiln/env`` after ``scripts/quickstart.sh`` sets both. Without them every test errors
(never skips): run ``scripts/test.sh``, or the quickstart then
``python -m pytest clients/python/tests``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest

import kiln

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "data"


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: these tests run against a real Kiln stack. Run scripts/test.sh, "
            "or scripts/quickstart.sh then `. .kiln/env` and pytest again.",
            pytrace=False,
        )
    return value


class Stack:
    """This session's team on the stack under test, with one token per role."""

    def __init__(self) -> None:
        self.url = _need("KILN_API_URL").rstrip("/")
        admin = _need("KILN_ADMIN_TOKEN")
        self.admin = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        self.team_name = f"sdk-{uuid.uuid4().hex[:10]}"
        team = self.admin.post("/v1/teams", json={"name": self.team_name})
        team.raise_for_status()
        self.team_id = team.json()["id"]
        self.tokens = {role: self.token(role) for role in ("viewer", "member", "maintainer")}

    def token(self, role: str) -> str:
        answer = self.admin.post(f"/v1/teams/{self.team_id}/tokens", json={"name": f"sdk-{role}", "role": role})
        answer.raise_for_status()
        return answer.json()["token"]

    def client(self, role: str = "maintainer") -> kiln.Client:
        return kiln.Client(self.url, self.tokens[role])


@pytest.fixture(scope="session")
def stack() -> Stack:
    return Stack()


@pytest.fixture(scope="session")
def client(stack: Stack) -> kiln.Client:
    """A maintainer of this session's team."""
    with stack.client("maintainer") as c:
        yield c


@pytest.fixture(scope="session")
def iris_frame() -> pd.DataFrame:
    return pd.read_csv(DATA / "iris.csv")


@pytest.fixture(scope="session")
def iris(client: kiln.Client, iris_frame: pd.DataFrame) -> kiln.Dataset:
    """Iris, uploaded from a DataFrame."""
    return client.datasets.upload(iris_frame, name="iris")


#: A short Iris training job (seconds on a debug build).
def iris_spec(dataset_id: str, epochs: int = 15) -> dict:
    return {
        "dataset_id": dataset_id,
        "task": "classification",
        "target": "species",
        "model": {"type": "mlp", "hidden": [16]},
        "hyperparameters": {"epochs": epochs, "batch_size": 16, "learning_rate": 0.02, "seed": 7},
        "device": "cpu",
    }


@pytest.fixture(scope="session")
def trained(client: kiln.Client, iris: kiln.Dataset) -> kiln.Job:
    """A succeeded Iris job."""
    return client.jobs.submit(iris_spec(iris.id)).wait(progress=False, timeout=600)
