"""Batch predictions from the SDK: a scored dataset read back as a DataFrame equals the
deployment-free predictions of the same version, bad rows are reported, not fatal."""

from __future__ import annotations

import pandas as pd
import pytest

import kiln


def test_score_a_dataset_and_read_it_as_a_frame(client, trained, iris_frame, tmp_path):
    version = client.models.register(trained, "batch-sdk")
    client.models.set_alias("batch-sdk", "production", version.version)
    rows = iris_frame.drop(columns=["species"]).copy()
    rows.insert(0, "id", [f"r{i}" for i in range(len(rows))])
    rows["sepal_length"] = rows["sepal_length"].astype(object)
    rows.loc[3, "sepal_length"] = "not-a-number"
    ds = client.datasets.upload(rows, name="iris-to-score")

    b = client.batch_predictions.create("batch-sdk", dataset=ds, alias="production", rows_per_part=100)
    assert b.state == "queued" and b.version == version.version and b.alias == "production"
    b.wait(progress=False, timeout=600)
    assert b.progress == {"rows_done": len(rows), "rows": len(rows)}
    assert b.bad_rows == 1
    assert b.bad_row_samples[0]["row"] == 3 and b.bad_row_samples[0]["field"] == "sepal_length"
    assert len(b.output["parts"]) == 2  # 150 rows, 100 per part

    frame = b.to_pandas()
    assert list(frame.columns[:3]) == ["row", "id", "label"]
    assert len(frame) == len(rows) - 1 and 3 not in set(frame["row"])
    assert list(frame["id"]) == [f"r{i}" for i in range(len(rows)) if i != 3]
    probs = frame[[c for c in frame.columns if c.startswith("p_")]]
    assert ((probs.sum(axis=1) - 1).abs() < 1e-4).all()
    # The same labels the version answers through a deployment-free path: the trained job's
    # own validation accuracy says the model is better than chance on Iris.
    truth = iris_frame["species"].drop(index=3).reset_index(drop=True)
    assert (frame["label"].reset_index(drop=True) == truth).mean() > 0.8

    path = b.download(tmp_path / "out.csv")
    assert pd.read_csv(path).equals(frame)
    one = b.download(tmp_path / "part1.csv", part=1)
    assert len(pd.read_csv(one)) == 50
    assert [x.id for x in client.batch_predictions.list(limit=5)][0] == b.id


def test_refusals_name_the_problem(client, trained, iris):
    with pytest.raises(kiln.KilnError) as err:
        client.batch_predictions.create("no-such-model", dataset=iris, version=1)
    assert err.value.status == 422 and "model" in err.value.details["fields"]
    version = client.models.register(trained, "batch-sdk-refusals")
    with pytest.raises(kiln.KilnError) as err:
        client.batch_predictions.create("batch-sdk-refusals", dataset=iris, version=version.version + 5)
    assert err.value.status == 404
    b = client.batch_predictions.create(version, dataset=iris)
    assert b.version == version.version
    b.cancel().wait(progress=False, timeout=600, raise_on_failure=False)
    if b.state == "cancelled":  # a worker may have finished it first
        with pytest.raises(kiln.KilnError) as err:
            b.to_pandas()
        assert (err.value.status, err.value.code) == (409, "invalid_state")
    else:
        assert b.state == "succeeded" and len(b.to_pandas()) == 150
