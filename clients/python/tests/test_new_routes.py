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
    assert model.latest_version == version.version and model.versions == 1
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
    version = client.models.register(job, "to-delete")

    # A model version trained on the dataset keeps it.
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.delete(ds)
    assert (err.value.code, err.value.status) == ("in_use", 409)
    assert err.value.details["model_versions"] == [{"model": "to-delete", "version": version.version}]

    # So does a job that is still queued or running, and its run.
    other = client.datasets.upload(frame.sample(frac=1, random_state=12), name="iris-delete")
    queued = client.jobs.submit(iris_spec(other.id, epochs=5000))
    try:
        with pytest.raises(kiln.KilnError) as err:
            client.datasets.delete(other)
        assert err.value.code == "in_use" and queued.id in err.value.details["jobs"]
        with pytest.raises(kiln.KilnError) as err:
            client.runs.delete(queued.id)
        assert err.value.code == "in_use" and queued.id in err.value.details["jobs"]
    finally:
        queued.cancel()
        queued.wait(progress=False, timeout=120, raise_on_failure=False)

    # An alias and a deployment keep a model version.
    client.models.set_alias("to-delete", "production", version.version)
    client.deployments.create("to-delete", "to-delete", alias="production")
    with pytest.raises(kiln.KilnError) as err:
        client.models.delete_version("to-delete", version.version)
    assert (err.value.code, err.value.status) == ("in_use", 409)
    assert err.value.details["aliases"] == ["production"]
    assert err.value.details["deployments"] == ["to-delete"]

    with pytest.raises(kiln.KilnError) as err:
        stack.client("member").datasets.delete(ds)
    assert (err.value.code, err.value.status) == ("forbidden", 403)

    # Nothing uses these: deleted.
    second = client.models.register(client.jobs.submit(iris_spec(ds.id, epochs=2)).wait(progress=False), "to-delete")
    client.models.delete_version("to-delete", second.version)
    assert second.version not in [v.version for v in client.models.versions("to-delete")]
    unused = client.datasets.upload(pd.DataFrame({"a": [1, 2], "b": [3, 4]}), name="unused")
    client.datasets.delete(unused)
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.get(unused)
    assert err.value.status == 404


def test_the_same_upload_and_registration_answer_what_exists(client, trained):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "a"]})
    first = client.datasets.upload(frame, name="same-bytes")
    again = client.datasets.upload(frame, name="same-bytes")
    assert (again.id, again.version) == (first.id, first.version)
    v1 = client.models.register(trained, "same-job")
    v2 = client.models.register(trained, "same-job")
    assert v2.version == v1.version


def test_delete_a_run(client):
    with client.start_run("delete-me") as run:
        run.log_metric("loss", 1.0, step=0)
    client.runs.delete(run)
    with pytest.raises(kiln.KilnError) as err:
        client.runs.get(run.id)
    assert err.value.status == 404
