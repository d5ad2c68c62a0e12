"""Notebook-style tracking: a run of 10,000 points, buffered and sent in batches from a
background thread, read back exactly; failed runs; errors at the call site and from the
sender."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

import kiln


def curve(step: int) -> tuple[float, float]:
    return 1.0 / (1 + step) + math.sin(step) * 1e-3, 1 - math.exp(-step / 700) / 3


def test_ten_thousand_points_read_back_exactly(client):
    steps = 5000
    with client.start_run("notebook", {"lr": 0.01, "layers": [64, 32], "optimizer": "adam"}) as run:
        assert run.status == "running"
        for step in range(steps):
            loss, acc = curve(step)
            run.log_metrics({"train_loss": loss, "val_accuracy": np.float32(acc)}, step=step)
    assert run.status == "succeeded"
    assert run.params == {"lr": 0.01, "layers": [64, 32], "optimizer": "adam"}

    frame = run.metrics()
    assert list(frame.columns) == ["series", "step", "value"]
    assert len(frame) == 2 * steps == 10_000
    loss = frame[frame.series == "train_loss"].sort_values("step")
    acc = frame[frame.series == "val_accuracy"].sort_values("step")
    assert list(loss.step) == list(range(steps)) == list(acc.step)
    assert list(loss.value) == [curve(s)[0] for s in range(steps)]  # exact: float64 round trip
    assert list(acc.value) == [float(np.float32(curve(s)[1])) for s in range(steps)]
    # The same through the runs namespace.
    assert len(client.runs.metrics(run.id, name="train_loss")) == steps


def test_steps_count_up_by_default_and_log_metric(client):
    with client.start_run("auto-steps", flush_interval=0.1) as run:
        run.log_metrics({"a": 1.0})
        run.log_metrics({"a": 2.0})
        run.log_metric("b", 5.0, step=10)
        run.log_metrics({"a": 3.0})
        run.flush()
        early = run.metrics()
        assert len(early) == 4  # flush sent everything while the run is still open
    frame = run.metrics()
    assert frame[frame.series == "a"][["step", "value"]].values.tolist() == [[0, 1.0], [1, 2.0], [11, 3.0]]
    assert frame[frame.series == "b"][["step", "value"]].values.tolist() == [[10, 5.0]]


def test_an_exception_fails_the_run_and_propagates(client):
    with pytest.raises(ZeroDivisionError):
        with client.start_run("crashes") as run:
            run.log_metrics({"loss": 0.5}, step=0)
            1 / 0
    assert run.status == "failed"
    # What was logged before the crash is kept.
    assert run.metrics().value.tolist() == [0.5]
    listed = {r.id: r for r in client.runs.list(limit=200)}
    assert listed[run.id].status == "failed"


def test_bad_points_raise_at_the_call_site(client):
    with client.start_run("bad-points") as run:
        with pytest.raises(kiln.KilnError) as err:
            run.log_metrics({"loss": float("nan")}, step=1)
        assert err.value.code == "invalid_argument" and "finite" in err.value.message
        with pytest.raises(kiln.KilnError) as err:
            run.log_metric("loss", 1.0, step=-1)
        assert "≥ 0" in err.value.message
        with pytest.raises(kiln.KilnError) as err:
            run.log_metric("loss", 1.0, step=1.5)
        assert "integer" in err.value.message
        with pytest.raises(kiln.KilnError):
            run.log_metrics({"": 1.0})
        with pytest.raises(kiln.KilnError):
            run.log_metrics({"loss": "high"})
        run.log_metric("loss", 1.0, step=1)
    assert run.metrics().value.tolist() == [1.0]
    with pytest.raises(kiln.KilnError) as err:
        run.log_metric("loss", 2.0, step=2)
    assert err.value.code == "invalid_state"


def test_a_batch_the_api_refuses_is_raised_to_the_caller(client, stack):
    # Another team's (here: nobody's) run answers 404; the sender thread's error comes
    # back on flush, with the API's code.
    ghost = kiln.Run(client._http, {"id": str(uuid.uuid4()), "name": "ghost", "status": "running"})
    ghost.log_metric("loss", 1.0, step=0)
    with pytest.raises(kiln.KilnError) as err:
        ghost.flush(timeout=30)
    assert (err.value.code, err.value.status) == ("not_found", 404)
    with pytest.raises(kiln.KilnError):
        ghost.log_metric("loss", 1.0, step=1)  # the error stays until the run is dropped

    # A viewer may not log.
    with client.start_run("viewer-target") as run:
        viewer_run = kiln.Run(stack.client("viewer")._http, dict(run.info))
        viewer_run.log_metric("x", 1.0, step=0)
        with pytest.raises(kiln.KilnError) as err:
            viewer_run.flush(timeout=30)
        assert (err.value.code, err.value.status) == ("forbidden", 403)


def test_a_run_name_is_validated(client):
    with pytest.raises(kiln.KilnError) as err:
        client.start_run("   ")
    assert (err.value.code, err.value.status) == ("validation_failed", 422)
    assert "name" in err.value.fields
