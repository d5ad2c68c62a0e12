"""MLflow's model registry and MLflow 3's logged models with the stock client, on Kiln's
registry: ``mlflow.pytorch.log_model`` and ``load_model`` of a small torch model,
``register_model``, aliases, searches, CRUD, what Kiln's native API shows of it, the
deployment refusal of a version with only MLflow artifacts, and team isolation."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException, RestException


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def _example() -> np.ndarray:
    # MLflow 3's default `pt2` format traces the model with an example input.
    return np.zeros((2, 3), dtype=np.float32)


def test_pytorch_log_model_loads_back_registers_and_aliases(client, team):
    model = _linear()
    x = torch.randn(5, 3)
    with mlflow.start_run() as run:
        info = mlflow.pytorch.log_model(model, name="model", input_example=_example())
    assert info.model_id.startswith("m-")
    assert info.model_uri == f"models:/{info.model_id}"
    logged = client.get_logged_model(info.model_id)
    assert logged.status == LoggedModelStatus.READY
    assert logged.source_run_id == run.info.run_id

    loaded = mlflow.pytorch.load_model(info.model_uri)
    assert torch.allclose(loaded(x), model(x))

    name = _name("linear")
    version = mlflow.register_model(info.model_uri, name)
    assert version.version == "1"
    assert version.status == "READY"
    assert version.run_id == run.info.run_id
    client.set_registered_model_alias(name, "champion", version.version)
    by_alias = client.get_model_version_by_alias(name, "champion")
    assert by_alias.version == "1"
    assert by_alias.aliases == ["champion"]
    again = mlflow.pytorch.load_model(f"models:/{name}@champion")
    assert torch.allclose(again(x), model(x))
    also = mlflow.pytorch.load_model(f"models:/{name}/1")
    assert torch.allclose(also(x), model(x))

    found = client.search_registered_models(filter_string=f"name LIKE '{name[:10]}%'")
    assert [m.name for m in found] == [name]
    assert found[0].aliases == {"champion": "1"}

    # Kiln's own registry shows it; a deployment refuses it with the reason.
    http = team.http()
    native = http.get(f"/v1/models/{name}").json()
    assert native["aliases"] == {"champion": 1}
    assert native["versions"] == 1
    refused = http.post("/v1/deployments", json={"name": _name("d"), "model": name, "version": 1})
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        f"version 1 of model {name} has only MLflow artifacts, no Kiln bundle; "
        "register a Kiln job's run to serve it"
    )


def test_register_model_from_a_runs_uri_finds_the_logged_model(client):
    model = _linear()
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(model, name="net", input_example=_example())
    name = _name("from-run")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/net", name)
    assert version.version == "1"
    loaded = mlflow.pytorch.load_model(f"models:/{name}/1")
    x = torch.randn(2, 3)
    assert torch.allclose(loaded(x), model(x))


def test_registered_model_and_version_crud(client):
    name = _name("crud")
    client.create_registered_model(name, tags={"owner": "risk"}, description="first")
    with pytest.raises(MlflowException) as err:
        client.create_registered_model(name)
    assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"
    client.update_registered_model(name, description="second")
    client.set_registered_model_tag(name, "tier", "gold")
    client.delete_registered_model_tag(name, "owner")
    got = client.get_registered_model(name)
    assert got.description == "second"
    assert got.tags == {"tier": "gold"}

    with mlflow.start_run() as run:
        mlflow.log_text("x", "model/MLmodel")
    source = f"{run.info.artifact_uri}/model"
    v1 = client.create_model_version(name, source, run_id=run.info.run_id, description="v1",
                                     tags={"k": "v"})
    v2 = client.create_model_version(name, source, run_id=run.info.run_id)
    assert (v1.version, v2.version) == ("1", "2")
    client.update_model_version(name, "1", description="best")
    client.set_model_version_tag(name, "1", "checked", "yes")
    client.delete_model_version_tag(name, "1", "k")
    got = client.get_model_version(name, "1")
    assert (got.description, got.tags, got.source) == ("best", {"checked": "yes"}, source)
    by_name = client.search_model_versions(f"name='{name}'")
    assert sorted(v.version for v in by_name) == ["1", "2"]
    by_run = client.search_model_versions(f"run_id='{run.info.run_id}'")
    assert len(by_run) == 2
    assert [v.version for v in client.get_latest_versions(name)] == ["2"]

    client.set_registered_model_alias(name, "prod", "2")
    with pytest.raises(MlflowException) as err:
        client.delete_model_version(name, "2")
    assert err.value.error_code == "INVALID_STATE"
    client.delete_registered_model_alias(name, "prod")
    client.delete_model_version(name, "2")
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == ["1"]

    new_name = _name("renamed")
    client.rename_registered_model(name, new_name)
    assert client.get_registered_model(new_name).name == new_name
    client.delete_registered_model(new_name)
    with pytest.raises(MlflowException) as err:
        client.get_registered_model(new_name)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_kilns_model_name_rule_applies(client):
    with pytest.raises(MlflowException) as err:
        client.create_registered_model("no spaces allowed")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "letters, digits" in err.value.message


def test_search_pages_through_registered_models(client):
    prefix = _name("page")
    for i in range(3):
        client.create_registered_model(f"{prefix}-{i}")
    first = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=2,
                                            order_by=["name DESC"])
    assert [m.name for m in first] == [f"{prefix}-2", f"{prefix}-1"]
    assert first.token
    rest = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=2,
                                           order_by=["name DESC"], page_token=first.token)
    assert [m.name for m in rest] == [f"{prefix}-0"]


def test_another_team_sees_none_of_it(use_team, team, other_team):
    mine = use_team(team)
    name = _name("private")
    mine.create_registered_model(name)
    with mlflow.start_run() as run:
        info = mlflow.pytorch.log_model(_linear(), name="model", input_example=_example())
    version = mine.create_model_version(name, info.model_uri, run_id=run.info.run_id)
    mine.set_registered_model_alias(name, "prod", version.version)

    theirs = use_team(other_team)
    with pytest.raises(RestException) as err:
        theirs.get_registered_model(name)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(RestException) as err:
        theirs.get_model_version_by_alias(name, "prod")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(RestException) as err:
        theirs.get_logged_model(info.model_id)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert [m.name for m in theirs.search_registered_models()] == []
    assert list(theirs.search_model_versions(f"name='{name}'")) == []
    with pytest.raises(Exception):
        mlflow.pytorch.load_model(info.model_uri)
