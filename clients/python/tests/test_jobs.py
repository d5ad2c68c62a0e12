"""Submit, wait with progress, metrics as a DataFrame, logs, cancel, retry, and a wait
interrupted without cancelling the job."""

from __future__ import annotations

import _thread
import threading

import pytest

import kiln
from conftest import iris_spec


def test_submit_with_keywords_and_wait(client, iris, capsys):
    job = client.jobs.submit(
        dataset=iris,
        task="classification",
        target="species",
        model={"type": "mlp", "hidden": [8]},
        epochs=6,
        batch_size=16,
        learning_rate=0.05,
        seed=1,
        device="cpu",
    )
    assert job.state == "queued"
    assert job.spec["hyperparameters"]["epochs"] == 6
    assert job.spec["dataset_id"] == iris.id
    assert job.wait(progress=True, poll=0.2) is job
    assert job.state == "succeeded" and job.done
    assert job.progress == {"epoch": 6, "epochs": 6}
    bar = capsys.readouterr().err
    assert f"job …{job.id[-8:]}" in bar and "6/6" in bar and "val_accuracy=" in bar


def test_metrics_are_a_long_dataframe(client, trained):
    frame = trained.metrics()
    assert list(frame.columns) == ["series", "epoch", "value"]
    assert {"train_loss", "val_loss", "val_accuracy", "val_f1"} <= set(frame["series"])
    epochs = trained.spec["hyperparameters"]["epochs"]
    acc = frame[frame.series == "val_accuracy"]
    assert sorted(acc.epoch) == list(range(1, epochs + 1))
    assert trained.final_metrics["val_accuracy"] in set(acc.value)
    assert str(frame["value"].dtype) == "float64" and str(frame["epoch"].dtype) == "int64"
    only = trained.metrics("train_loss")
    assert set(only.series) == {"train_loss"} and len(only) == epochs
    # The same series through the run view of the job (a job is a run).
    assert client.runs.metrics(trained.id).value.sum() == pytest.approx(frame.value.sum())


def test_logs_and_follow(trained):
    lines = trained.logs()
    assert lines and all(isinstance(line, kiln.LogLine) for line in lines)
    followed = list(trained.logs(follow=True))
    assert [line.message for line in followed] == [line.message for line in lines]
    assert any("epoch" in line.message for line in lines)


def test_a_bad_spec_lists_every_field(client, iris):
    spec = iris_spec(iris.id)
    del spec["model"]
    spec["hyperparameters"].update(epochs=0, learning_rate=-1)
    with pytest.raises(kiln.KilnError) as err:
        client.jobs.submit(spec)
    e = err.value
    assert (e.code, e.status) == ("validation_failed", 422)
    assert set(e.fields) == {"model", "hyperparameters.epochs", "hyperparameters.learning_rate"}
    lines = str(e).splitlines()
    assert lines[0] == "validation_failed (422): 3 fields are invalid"
    assert [line.split()[0] for line in lines[1:]] == ["hyperparameters.epochs", "hyperparameters.learning_rate", "model"]

    # A spec that does not fit the dataset: the field it names.
    with pytest.raises(kiln.KilnError) as err:
        client.jobs.submit(iris_spec(iris.id), target="colour")
    assert err.value.status == 422 and "target" in err.value.fields


def test_cancel_retry_and_a_finished_job(client, iris, trained):
    job = client.jobs.submit(iris_spec(iris.id, epochs=5000))
    job.cancel()
    assert job.cancel_requested or job.state == "cancelled"
    job.wait(progress=False, poll=0.2, timeout=120, raise_on_failure=False)
    assert job.state == "cancelled"
    with pytest.raises(kiln.KilnError) as err:
        job.wait(progress=False)
    assert err.value.code == "job_failed" and "cancelled" in err.value.message
    job.retry()
    assert job.state == "queued"
    job.cancel()
    job.wait(progress=False, poll=0.2, timeout=120, raise_on_failure=False)
    assert job.state == "cancelled"

    with pytest.raises(kiln.KilnError) as err:
        trained.cancel()
    assert (err.value.code, err.value.status) == ("invalid_state", 409)
    with pytest.raises(kiln.KilnError) as err:
        client.jobs.get("0190a3c4-0000-7000-8000-000000000000")
    assert (err.value.code, err.value.status) == ("not_found", 404)


def test_a_viewer_cannot_submit(stack, iris):
    with pytest.raises(kiln.KilnError) as err:
        stack.client("viewer").jobs.submit(iris_spec(iris.id))
    assert (err.value.code, err.value.status) == ("forbidden", 403)


def test_idempotent_submit_and_a_wait_that_times_out(client, iris):
    spec = iris_spec(iris.id, epochs=5000)
    job = client.jobs.submit(spec, idempotency_key="sdk-test-key")
    try:
        again = client.jobs.submit(spec, idempotency_key="sdk-test-key")
        assert again.id == job.id
        with pytest.raises(kiln.KilnError) as err:
            client.jobs.submit(spec, idempotency_key="sdk-test-key", priority=5)
        assert (err.value.code, err.value.status) == ("idempotency_conflict", 409)
        with pytest.raises(kiln.KilnError) as err:
            job.wait(progress=False, poll=0.1, timeout=0.5)
        assert err.value.code == "timeout" and job.id in err.value.message
        assert job.id in [j.id for j in client.jobs.list()]
    finally:
        job.cancel()
        job.wait(progress=False, poll=0.2, timeout=120, raise_on_failure=False)
    assert job.state == "cancelled"


def test_interrupting_wait_leaves_the_job_alone(client, iris, capsys):
    job = client.jobs.submit(iris_spec(iris.id, epochs=5000))
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            job.wait(progress=True, poll=0.1)
    finally:
        timer.cancel()
    assert f"stopped waiting; job {job.id} goes on" in capsys.readouterr().err
    job.refresh()
    assert job.state in ("queued", "running") and not job.cancel_requested
    job.cancel()
    job.wait(progress=False, poll=0.2, timeout=120, raise_on_failure=False)
    assert job.state == "cancelled"
