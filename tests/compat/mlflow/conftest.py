"""Fixtures for the MLflow-compatibility tests: the stock ``mlflow`` client (from the package
index, scripts/env.sh's ``kiln_ensure_mlflow_venv``) against a real Kiln stack, e.g. the one
``scripts/quickstart.sh`` starts (``scripts/check-mlflow.sh`` runs this suite against it).

They need ``KILN_API_URL`` and ``KILN_ADMIN_TOKEN`` (``. .kiln/env`` after the quickstart):
each session makes its own teams with the admin token, so the tests never see another run's
objects. Without them every test errors (never skips).
"""

from __future__ import annotations

import os
import uuid

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/check-mlflow.sh against a Kiln stack", pytrace=False)
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
            answer = admin.post(f"/v1/teams/{self.id}/tokens", json={"name": f"mlflow-{role}", "role": role})
            answer.raise_for_status()
            self.tokens[role] = answer.json()["token"]

    def http(self, role: str = "maintainer") -> httpx.Client:
        """Kiln's native API as this team (to check what MLflow wrote, as Kiln sees it)."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=30)


@pytest.fixture(scope="session")
def kiln_url() -> str:
    return _need("KILN_API_URL").rstrip("/")


@pytest.fixture(scope="session")
def admin(kiln_url: str) -> httpx.Client:
    token = _need("KILN_ADMIN_TOKEN")
    return httpx.Client(base_url=kiln_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="session")
def team(kiln_url: str, admin: httpx.Client) -> Team:
    return Team(kiln_url, admin, "mlflow")


@pytest.fixture(scope="session")
def other_team(kiln_url: str, admin: httpx.Client) -> Team:
    return Team(kiln_url, admin, "mlflow-other")


@pytest.fixture
def use_team(monkeypatch: pytest.MonkeyPatch, kiln_url: str):
    """``use_team(team, role)`` points the stock client at Kiln as that team's token, exactly
    as a user does: the two environment variables and nothing else."""

    def use(t: Team, role: str = "maintainer") -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", kiln_url)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", t.tokens[role])
        mlflow.set_tracking_uri(kiln_url)
        return MlflowClient()

    yield use
    if mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def client(use_team, team: Team) -> MlflowClient:
    """The stock client as this session's team's maintainer."""
    return use_team(team)
