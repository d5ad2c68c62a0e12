"""Studies from the SDK: a small search on Iris runs on the server, its trials read as a
DataFrame, the best is registered in one call; bad specs raise with every field named."""

from __future__ import annotations

import pytest

import kiln

from conftest import iris_spec


def test_a_study_runs_and_its_best_trial_is_registered(client, iris):
    base = iris_spec(iris.id, epochs=10)
    study = client.studies.create(
        "sdk-search", base=base,
        parameters={"hyperparameters.learning_rate": {"type": "float", "min": 0.005, "max": 0.1, "log": True},
                    "model.hidden": {"type": "categorical", "values": [[8], [16]]}},
        objective={"metric": "val_accuracy"},
        algorithm="random", seed=4, max_trials=3, parallel_trials=1)
    assert study.state == "running" and study.spec["objective"]["goal"] == "maximize"
    study.wait(progress=True, timeout=600)
    assert study.done and study.state == "succeeded", study.data
    assert study.counts["succeeded"] == 3

    frame = study.trials_frame()
    assert list(frame["number"]) == [0, 1, 2]
    assert {"hyperparameters.learning_rate", "model.hidden", "objective"} <= set(frame.columns)
    assert frame["objective"].max() == pytest.approx(study.best_trial["objective"])

    version = study.register_best("iris-tuned")
    assert version.model == "iris-tuned" and version.job_id == study.best_trial["job_id"]
    assert client.studies.get(study.id).state == "succeeded"
    assert any(s.id == study.id for s in client.studies.list())


def test_a_bad_study_names_every_field(client, iris):
    with pytest.raises(kiln.KilnError) as err:
        client.studies.create(
            "bad", base=iris_spec(iris.id),
            parameters={"hyperparameters.learning_rate": {"type": "float", "min": 1, "max": 0.1}},
            objective={"metric": "val_r2"}, algorithm="annealing")
    assert err.value.code == "validation_failed"
    fields = err.value.details["fields"]
    assert {"parameters.hyperparameters.learning_rate.max", "objective.metric", "algorithm"} <= set(fields)


def test_stopping_a_study_cancels_its_open_trials(client, iris):
    study = client.studies.create(
        "sdk-stop", base=iris_spec(iris.id, epochs=200),
        parameters={"hyperparameters.learning_rate": {"type": "float", "min": 0.001, "max": 0.01}},
        objective={"metric": "val_loss"}, max_trials=5, parallel_trials=2)
    study.stop()
    assert study.state == "stopped"
    with pytest.raises(kiln.KilnError) as err:
        study.wait(progress=False, timeout=60)
    assert err.value.code == "job_failed" and "stopped" in err.value.message
