"""Register a trained job, move an alias, deploy it and predict from a DataFrame; the
registry's and serving's error paths."""

from __future__ import annotations

import pytest

import kiln
from conftest import iris_spec


@pytest.fixture(scope="module")
def version(client, trained) -> kiln.ModelVersion:
    return client.models.register(trained, "iris")


@pytest.fixture(scope="module")
def deployment(client, version) -> kiln.Deployment:
    client.models.set_alias("iris", "production", version.version)
    return client.deployments.create("iris", "iris", alias="production", max_batch_size=32, max_wait_ms=1)


def test_register_and_alias(client, trained, version):
    assert version.model == "iris" and version.job_id == trained.id
    assert version.metrics["val_accuracy"] == trained.final_metrics["val_accuracy"]
    moved = client.models.set_alias("iris", "staging", version.version)
    assert (moved.alias, moved.version) == ("staging", version.version)
    versions = client.models.versions("iris")
    assert version.version in [v.version for v in versions]
    assert "staging" in client.models.version("iris", version.version).aliases
    listed = {m.name: m for m in client.models.list()}
    assert listed["iris"].aliases["staging"] == version.version


def test_deploy_and_predict_a_dataframe(client, deployment, version, iris_frame):
    assert deployment.name == "iris" and deployment.status == "ready"
    assert client.deployments.get("iris").alias == "production"
    assert "iris" in [d.name for d in client.deployments.list()]
    rows = iris_frame.sample(30, random_state=4)
    predicted = client.deployments.predict("iris", rows.drop(columns="species"))
    assert len(predicted) == 30 and list(predicted.index) == list(rows.index)
    classes = sorted(iris_frame.species.unique())
    assert list(predicted.columns) == ["label"] + [f"probability_{c}" for c in classes]
    assert set(predicted.label) <= set(classes)
    sums = predicted[[f"probability_{c}" for c in classes]].sum(axis=1)
    assert ((sums - 1).abs() < 1e-4).all()
    assert predicted.attrs["model_version"] == version.version
    assert (predicted.label == rows.species).mean() >= 0.7  # a trained model, not noise

    records = rows.drop(columns="species").head(3).to_dict(orient="records")
    assert client.deployments.predict("iris", records).label.tolist() == predicted.label.head(3).tolist()


def test_more_rows_than_one_request_takes(client, deployment, iris_frame):
    import pandas as pd

    rows = pd.concat([iris_frame] * 40, ignore_index=True).drop(columns="species")  # 6,000 rows
    rows.index = rows.index + 1000
    predicted = client.deployments.predict("iris", rows)
    assert len(predicted) == 6000 and list(predicted.index) == list(rows.index)
    # The same row gets the same answer in either request of the two.
    assert predicted.label.iloc[10] == predicted.label.iloc[10 + 150 * 39]
    # A missing value (NaN) is sent as missing; this model was trained without imputing,
    # so it is refused, naming the row by its place in the whole input.
    rows.iloc[5003, rows.columns.get_loc("petal_width")] = float("nan")
    with pytest.raises(kiln.KilnError) as err:
        client.deployments.predict("iris", rows)
    assert (err.value.code, err.value.status) == ("validation_failed", 422)
    assert list(err.value.fields) == ["instances[5003].petal_width"]
    assert "missing value" in err.value.fields["instances[5003].petal_width"]


def test_registry_and_serving_errors(client, stack, iris, deployment, version, iris_frame):
    with pytest.raises(kiln.KilnError) as err:
        client.deployments.predict("iris", [{"sepal_length": 5.1, "sepal_width": "wide"}])
    assert (err.value.code, err.value.status) == ("validation_failed", 422)
    assert any(k.startswith("instances[0]") for k in err.value.fields)

    with pytest.raises(kiln.KilnError) as err:
        client.deployments.create("iris", "iris", alias="production")
    assert (err.value.code, err.value.status) == ("already_exists", 409)

    with pytest.raises(kiln.KilnError) as err:
        client.models.set_alias("iris", "production", 999)
    assert err.value.status == 422 and "version" in err.value.fields

    with pytest.raises(kiln.KilnError) as err:
        client.models.versions("no-such-model")
    assert (err.value.code, err.value.status) == ("not_found", 404)

    with pytest.raises(kiln.KilnError) as err:
        stack.client("member").models.register(version.job_id, "iris")
    assert (err.value.code, err.value.status) == ("forbidden", 403)

    queued = client.jobs.submit(iris_spec(iris.id, epochs=5000))
    try:
        with pytest.raises(kiln.KilnError) as err:
            client.models.register(queued, "iris")
        assert (err.value.code, err.value.status) == ("invalid_state", 409)
    finally:
        queued.cancel()
        queued.wait(progress=False, timeout=120, raise_on_failure=False)


def test_delete_a_deployment(client, version):
    client.deployments.create("iris-pinned", "iris", version=version.version)
    assert client.deployments.predict("iris-pinned", [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]).label[0]
    client.deployments.delete("iris-pinned")
    with pytest.raises(kiln.KilnError) as err:
        client.deployments.get("iris-pinned")
    assert (err.value.code, err.value.status) == ("not_found", 404)
