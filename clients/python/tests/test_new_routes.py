"""The SDK's calls for the routes issue 15 adds to kiln-api (GET /v1/runs/{id},
GET /v1/models/{name}, GET /v1/datasets/{id}/content, DELETE of datasets, model versions
and runs with 409 `in_use` while referenced). They pass once those routes are merged."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

import kiln
from conftest import DATA, iris_spec


def test_get_a_run(client):
    with client.start_run("get-me", {"k": 1}) as run:
        run.log_metric("loss", 0.5, step=0)
    info = client.runs.get(run.id)
    assert (info.id, info.name, info.status, info.params) == (run.id, "get-me", "succeeded", {"k": 1})
    assert run.refresh().status == "succeeded"
    with pytest.raises(kiln.KilnError) as err:
        client.runs.get("0190a3c4-0000-7000-8000-000000000000")
    assert (err.value.code, err.value.status) == ("not_found", 404)


def test_get_a_model(client, trained):
    version = client.models.register(trained, "fetched")
    client.models.set_alias("fetched", "production", version.version)
    model = client.models.get("fetched")
    assert model.name == "fetched" and model.aliases == {"production": version.version}
    with pytest.raises(kiln.KilnError) as err:
        client.models.get("never-registered")
    assert (err.value.code, err.value.status) == ("not_found", 404)


def test_download_a_dataset(client, tmp_path):
    path = DATA / "wine.csv"
    ds = client.datasets.upload(path, name="wine-download")
    got = client.datasets.download(ds, tmp_path / "wine.csv")
    assert got.read_bytes() == path.read_bytes()
    into_dir = client.datasets.download(ds.id, tmp_path)
    assert into_dir.name == f"wine-download-v{ds.version}.csv"
    assert hashlib.sha256(into_dir.read_bytes()).hexdigest() == ds.sha256
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.download("0190a3c4-0000-7000-8000-000000000000", tmp_path / "x")
    assert err.value.status == 404
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_deletes_refused_while_in_use(client, stack):
    frame = pd.read_csv(DATA / "iris.csv")
    ds = client.datasets.upload(frame.sample(frac=1, random_state=11), name="iris-delete")
    job = client.jobs.submit(iris_spec(ds.id, epochs=3)).wait(progress=False, timeout=600)
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.delete(ds)
    assert (err.value.code, err.value.status) == ("in_use", 409)

    version = client.models.register(job, "to-delete")
    client.models.set_alias("to-delete", "production", version.version)
    client.deployments.create("to-delete", "to-delete", alias="production")
    with pytest.raises(kiln.KilnError) as err:
        client.models.delete_version("to-delete", version.version)
    assert (err.value.code, err.value.status) == ("in_use", 409)

    with pytest.raises(kiln.KilnError) as err:
        stack.client("member").datasets.delete(ds)
    assert (err.value.code, err.value.status) == ("forbidden", 403)

    unused = client.datasets.upload(pd.DataFrame({"a": [1, 2], "b": [3, 4]}), name="unused")
    client.datasets.delete(unused)
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.get(unused)
    assert err.value.status == 404


def test_delete_a_run(client):
    with client.start_run("delete-me") as run:
        run.log_metric("loss", 1.0, step=0)
    client.runs.delete(run)
    with pytest.raises(kiln.KilnError) as err:
        client.runs.get(run.id)
    assert err.value.status == 404
