"""MLflow tracking with the stock client against Kiln: experiments, runs, params, tags,
metrics, searches, roles and team isolation, and that an MLflow run IS a Kiln run (and a
Kiln job an MLflow run)."""

from __future__ import annotations

import json
import math
import pathlib
import time
import uuid

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException, RestException

ROOT = pathlib.Path(__file__).resolve().parents[3]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_code(excinfo) -> str:
    return excinfo.value.error_code


def test_fluent_api_end_to_end(use_team, team):
    client = use_team(team, "member")
    name = unique("fluent")
    experiment = mlflow.set_experiment(name)
    assert experiment.name == name and experiment.lifecycle_stage == "active"
    assert experiment.experiment_id != "0"
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"optimizer": "adam", "layers": 3})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=4)
        mlflow.set_tag("stage", "dev")
        mlflow.set_tags({"owner": "ana", "kind": "baseline"})
    got = client.get_run(run.info.run_id)
    assert len(got.info.run_id) == 32
    assert got.info.run_name == "first"
    assert got.info.status == "FINISHED"
    assert got.info.end_time is not None and got.info.end_time >= got.info.start_time
    assert got.info.experiment_id == experiment.experiment_id
    assert got.info.artifact_uri == f"mlflow-artifacts:/{experiment.experiment_id}/{run.info.run_id}/artifacts"
    assert got.data.params == {"lr": "0.01", "optimizer": "adam", "layers": "3"}
    assert got.data.metrics == {"loss": pytest.approx(0.2), "acc": 0.9, "f1": 0.8}
    assert got.data.tags["stage"] == "dev" and got.data.tags["owner"] == "ana"
    assert got.data.tags["mlflow.runName"] == "first"
    assert "mlflow.user" in got.data.tags and "mlflow.source.name" in got.data.tags
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]

    # set_experiment again finds the same experiment (get-by-name).
    assert mlflow.set_experiment(name).experiment_id == experiment.experiment_id

    # search_runs with a filter and order_by
    with mlflow.start_run(run_name="second"):
        mlflow.log_param("lr", 0.1)
        mlflow.log_metric("loss", 0.05)
    found = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string="metrics.loss < 0.5 and params.lr = '0.01'",
        output_format="list",
    )
    assert [r.info.run_name for r in found] == ["first"]
    ordered = client.search_runs([experiment.experiment_id], order_by=["metrics.loss ASC"])
    assert [r.info.run_name for r in ordered] == ["second", "first"]
    ordered = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert [r.info.run_name for r in ordered] == ["second", "first"]
    frame = mlflow.search_runs([experiment.experiment_id], filter_string="tags.stage = 'dev'")
    assert list(frame["tags.mlflow.runName"]) == ["first"]


def test_fluent_without_an_experiment_uses_experiment_zero(use_team, team):
    client = use_team(team, "member")
    mlflow.set_experiment(experiment_id="0")
    run = mlflow.start_run()
    mlflow.log_metric("x", 3.0)
    mlflow.end_run()
    got = client.get_run(run.info.run_id)
    assert got.info.experiment_id == "0"
    assert got.info.run_name  # generated as MLflow does
    assert got.data.metrics == {"x": 3.0}
    assert client.get_experiment("0").name == "Default"
    assert client.get_experiment_by_name("Default").experiment_id == "0"


def test_client_crud_of_experiments(client):
    name = unique("crud")
    eid = client.create_experiment(name, tags={"team": "vision"})
    assert isinstance(eid, str)
    e = client.get_experiment(eid)
    assert e.name == name and e.tags == {"team": "vision"}
    with pytest.raises(MlflowException) as excinfo:
        client.create_experiment(name)
    assert error_code(excinfo) == "RESOURCE_ALREADY_EXISTS"
    client.set_experiment_tag(eid, "note", "hello")
    assert client.get_experiment(eid).tags["note"] == "hello"
    client.rename_experiment(eid, name + "-renamed")
    assert client.get_experiment_by_name(name) is None
    assert client.get_experiment_by_name(name + "-renamed").experiment_id == eid
    found = client.search_experiments(filter_string=f"name LIKE '{name}%'")
    assert [x.experiment_id for x in found] == [eid]
    found = client.search_experiments(filter_string="tags.team = 'vision'")
    assert eid in [x.experiment_id for x in found]
    client.delete_experiment(eid)
    assert client.get_experiment(eid).lifecycle_stage == "deleted"
    assert eid not in [x.experiment_id for x in client.search_experiments()]
    assert eid in [x.experiment_id for x in client.search_experiments(view_type=ViewType.DELETED_ONLY)]
    with pytest.raises(MlflowException, match="active"):
        mlflow.set_experiment(name + "-renamed")
    client.restore_experiment(eid)
    assert client.get_experiment(eid).lifecycle_stage == "active"
    with pytest.raises(MlflowException) as excinfo:
        client.get_experiment("987654321")
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"


def test_search_experiments_pages(client):
    prefix = unique("page")
    ids = [client.create_experiment(f"{prefix}-{i}") for i in range(5)]
    first = client.search_experiments(max_results=2, filter_string=f"name LIKE '{prefix}-%'", order_by=["name"])
    assert [e.name for e in first] == [f"{prefix}-0", f"{prefix}-1"]
    assert first.token
    rest = client.search_experiments(max_results=10, filter_string=f"name LIKE '{prefix}-%'", order_by=["name"], page_token=first.token)
    assert [e.experiment_id for e in rest] == ids[2:]


def test_client_crud_of_runs(client):
    eid = client.create_experiment(unique("runs"))
    run = client.create_run(eid, run_name="r1", tags={"a": "1"})
    rid = run.info.run_id
    assert run.info.status == "RUNNING" and run.info.lifecycle_stage == "active"
    client.log_batch(
        rid,
        metrics=[Metric("m", float(i), int(time.time() * 1000), i) for i in range(100)],
        params=[Param("p", "v")],
        tags=[RunTag("a", "2")],
    )
    got = client.get_run(rid)
    assert got.data.metrics["m"] == 99.0 and got.data.params == {"p": "v"} and got.data.tags["a"] == "2"
    # params are immutable: the same value again is fine, another is refused
    client.log_param(rid, "p", "v")
    with pytest.raises(MlflowException) as excinfo:
        client.log_param(rid, "p", "other")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    assert client.get_run(rid).data.params["p"] == "v"
    client.delete_tag(rid, "a")
    assert "a" not in client.get_run(rid).data.tags
    # NaN and infinities are accepted, as MLflow does
    client.log_metric(rid, "odd", float("nan"), step=0)
    client.log_metric(rid, "odd", float("inf"), step=1)
    history = client.get_metric_history(rid, "odd")
    assert math.isnan(history[0].value) and history[1].value == math.inf
    client.update_run(rid, status="KILLED", name="renamed")
    got = client.get_run(rid)
    assert got.info.status == "KILLED" and got.info.run_name == "renamed"
    assert got.data.tags["mlflow.runName"] == "renamed"
    client.set_terminated(rid, "FAILED")
    assert client.get_run(rid).info.status == "FAILED"
    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    assert client.search_runs([eid]) == []
    assert [r.info.run_id for r in client.search_runs([eid], run_view_type=ViewType.DELETED_ONLY)] == [rid]
    client.restore_run(rid)
    assert [r.info.run_id for r in client.search_runs([eid])] == [rid]
    with pytest.raises(MlflowException) as excinfo:
        client.get_run(uuid.uuid4().hex)
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"


def test_search_runs_filter_grammar_and_paging(client):
    eid = client.create_experiment(unique("grammar"))
    runs = []
    for i in range(7):
        r = client.create_run(eid, run_name=f"run-{i}")
        client.log_batch(
            r.info.run_id,
            metrics=[Metric("rmse", 1.0 - i / 10, 0, 0)],
            params=[Param("model", "tree" if i % 2 else "linear")],
            tags=[RunTag("group", f"g{i % 3}")],
        )
        if i < 3:
            client.set_terminated(r.info.run_id)
        runs.append(r.info.run_id)
    assert len(client.search_runs([eid], "metrics.rmse <= 0.7")) == 4
    assert len(client.search_runs([eid], "params.model = 'tree' and metrics.rmse > 0.5")) == 2
    assert len(client.search_runs([eid], "params.model LIKE 'tr%'")) == 3
    assert len(client.search_runs([eid], "tags.group != 'g0'")) == 4
    assert len(client.search_runs([eid], "attributes.status = 'FINISHED'")) == 3
    assert len(client.search_runs([eid], "attributes.run_name ILIKE 'RUN-1%'")) == 1
    assert len(client.search_runs([eid], f"attributes.run_id IN ('{runs[0]}', '{runs[1]}')")) == 2
    assert len(client.search_runs([eid], "attributes.status NOT IN ('FINISHED')")) == 4
    assert len(client.search_runs([eid], "attributes.start_time > 0")) == 7
    best = client.search_runs([eid], order_by=["metrics.rmse ASC"], max_results=2)
    assert [r.info.run_id for r in best] == [runs[6], runs[5]]
    assert best.token
    more = client.search_runs([eid], order_by=["metrics.rmse ASC"], max_results=10, page_token=best.token)
    assert [r.info.run_id for r in more] == list(reversed(runs[:5]))
    with pytest.raises(MlflowException) as excinfo:
        client.search_runs([eid], "metrics.rmse < 'low'")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    assert "number" in str(excinfo.value)
    with pytest.raises(MlflowException, match="invalid attribute key"):
        client.search_runs([eid], "attributes.colour = 'red'")


def test_log_batch_limits(client, team):
    eid = client.create_experiment(unique("limits"))
    rid = client.create_run(eid).info.run_id
    # The client splits a large batch into requests within MLflow's limits itself.
    client.log_batch(rid, metrics=[Metric("m", 1.0, 0, i) for i in range(2500)], params=[Param(f"p{i}", "v") for i in range(150)])
    assert len(client.get_metric_history(rid, "m")) == 2500
    assert len(client.get_run(rid).data.params) == 150
    with pytest.raises(MlflowException, match="length limit"):
        client.log_param(rid, "big", "x" * 6001)
    # A request over the limits (as another client might send) is refused whole.
    with team.http("member") as http:
        body = {"run_id": rid, "metrics": [{"key": "n", "value": 1, "timestamp": 0, "step": i} for i in range(1001)]}
        answer = http.post("/api/2.0/mlflow/runs/log-batch", json=body)
        assert answer.status_code == 400
        assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "n" not in client.get_run(rid).data.metrics


def test_log_inputs_shows_datasets(client):
    import pandas as pd

    eid = client.create_experiment(unique("inputs"))
    mlflow.set_experiment(experiment_id=eid)
    with mlflow.start_run() as run:
        dataset = mlflow.data.from_pandas(pd.DataFrame({"a": [1, 2], "b": [3, 4]}), name="tiny")
        mlflow.log_input(dataset, context="training")
    got = client.get_run(run.info.run_id)
    assert [d.dataset.name for d in got.inputs.dataset_inputs] == ["tiny"]
    assert got.inputs.dataset_inputs[0].tags[0].value == "training"
    assert len(client.search_runs([eid], "datasets.name = 'tiny'")) == 1


def test_bulk_interval_samples_evenly(client, team):
    eid = client.create_experiment(unique("bulk"))
    rid = client.create_run(eid).info.run_id
    client.log_batch(rid, metrics=[Metric("loss", float(i), 0, i) for i in range(1000)])
    with team.http("viewer") as http:
        answer = http.get(
            "/api/2.0/mlflow/metrics/get-history-bulk-interval",
            params={"run_ids": [rid], "metric_key": "loss", "max_results": 11},
        )
        answer.raise_for_status()
        steps = [m["step"] for m in answer.json()["metrics"]]
        assert steps[0] == 0 and steps[-1] == 999 and len(steps) == 11
        answer = http.get(
            "/api/2.0/mlflow/metrics/get-history-bulk-interval",
            params={"run_ids": [rid], "metric_key": "loss", "start_step": 10, "end_step": 20},
        )
        assert [m["step"] for m in answer.json()["metrics"]] == list(range(10, 21))
    paged = client.get_metric_history(rid, "loss")
    assert len(paged) == 1000


def test_another_team_sees_nothing(use_team, team, other_team):
    mine = use_team(team, "member")
    eid = mine.create_experiment(unique("private"))
    rid = mine.create_run(eid).info.run_id
    mine.log_metric(rid, "secret", 1.0)
    theirs = use_team(other_team, "maintainer")
    with pytest.raises(MlflowException) as excinfo:
        theirs.get_run(rid)
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        theirs.get_experiment(eid)
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    assert theirs.search_runs([eid]) == []
    assert theirs.search_runs(["0"], "metrics.secret = 1") == []
    with pytest.raises(MlflowException) as excinfo:
        theirs.log_metric(rid, "x", 1.0)
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        theirs.get_metric_history(rid, "secret")
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"


def test_a_viewer_reads_but_cannot_write(use_team, team):
    member = use_team(team, "member")
    eid = member.create_experiment(unique("roles"))
    rid = member.create_run(eid).info.run_id
    viewer = use_team(team, "viewer")
    assert viewer.get_run(rid).info.run_id == rid
    assert [r.info.run_id for r in viewer.search_runs([eid])] == [rid]
    for write in (
        lambda: viewer.log_metric(rid, "x", 1.0),
        lambda: viewer.log_param(rid, "p", "v"),
        lambda: viewer.set_tag(rid, "t", "v"),
        lambda: viewer.create_experiment(unique("nope")),
        lambda: viewer.create_run(eid),
        lambda: viewer.set_terminated(rid),
    ):
        with pytest.raises(RestException) as excinfo:
            write()
        assert error_code(excinfo) == "PERMISSION_DENIED"


def test_an_mlflow_run_is_a_kiln_run(client, team):
    eid = client.create_experiment(unique("native"))
    run = client.create_run(eid, run_name="native-view")
    rid = run.info.run_id
    client.log_batch(rid, metrics=[Metric("loss", 0.5 ** i, 0, i) for i in range(10)], params=[Param("lr", "0.1")])
    kiln_id = str(uuid.UUID(rid))
    with team.http("viewer") as http:
        native = http.get(f"/v1/runs/{kiln_id}")
        native.raise_for_status()
        assert native.json()["name"] == "native-view"
        assert native.json()["params"] == {"lr": "0.1"}
        assert native.json()["status"] == "running"
        series = http.get(f"/v1/runs/{kiln_id}/metrics").json()["series"]
        assert series["loss"] == [[i, 0.5 ** i] for i in range(10)]
        listed = http.get("/v1/runs", params={"limit": 100}).json()["items"]
        assert kiln_id in [r["id"] for r in listed]
    client.set_terminated(rid, "KILLED")
    with team.http("viewer") as http:
        assert http.get(f"/v1/runs/{kiln_id}").json()["status"] == "failed"
    # the dashed form of the id works too
    assert client.get_run(kiln_id).info.run_id == rid


def test_a_kiln_job_is_an_mlflow_run(client, team):
    spec = json.loads((ROOT / "examples" / "iris-mlp.json").read_text())
    with team.http("member") as http:
        dataset = http.post(
            "/v1/datasets",
            params={"name": "iris"},
            content=(ROOT / "data" / "iris.csv").read_bytes(),
            headers={"content-type": "text/csv"},
        )
        dataset.raise_for_status()
        spec["dataset_id"] = dataset.json()["id"]
        spec["hyperparameters"]["epochs"] = 3
        job = http.post("/v1/jobs", json=spec)
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        state = None
        for _ in range(600):  # bounded wait for the worker, not a timing assertion
            state = http.get(f"/v1/jobs/{job_id}").json()["state"]
            if state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert state == "succeeded"
    rid = uuid.UUID(job_id).hex
    run = client.get_run(rid)
    assert run.info.experiment_id == "0"
    assert run.info.status == "FINISHED"
    assert run.data.tags["kiln.job_id"] == job_id
    assert run.data.params["epochs"] == "3" and run.data.params["optimizer"] == "adam"
    assert run.data.metrics, "the job's metrics"
    some_key = sorted(run.data.metrics)[0]
    assert len(client.get_metric_history(rid, some_key)) >= 1
    found = client.search_runs(["0"], f"tags.`kiln.job_id` = '{job_id}'")
    assert [r.info.run_id for r in found] == [rid]
    found = client.search_runs(["0"], "params.epochs = '3' and attributes.status = 'FINISHED'")
    assert rid in [r.info.run_id for r in found]
    with pytest.raises(MlflowException) as excinfo:
        client.set_terminated(rid, "KILLED")
    assert error_code(excinfo) == "INVALID_STATE"


def test_unknown_routes_answer_json_404(team):
    with team.http("viewer") as http:
        answer = http.get("/api/2.0/mlflow/no/such/route")
        assert answer.status_code == 404
        assert answer.json()["error_code"] == "ENDPOINT_NOT_FOUND"
