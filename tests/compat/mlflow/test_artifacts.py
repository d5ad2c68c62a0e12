"""The ``mlflow-artifacts:`` proxy with the stock client: files logged by a run come back
byte for byte, directories list as the client expects, figures, text and dicts round-trip,
roles hold, and another team reaches none of it."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402


def test_log_artifact_downloads_the_same_bytes(client, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 123)
    src = tmp_path / "weights.bin"
    src.write_bytes(data)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(src), artifact_path="raw")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    out = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="raw/weights.bin", dst_path=str(tmp_path / "dl")
    )
    with open(out, "rb") as f:
        assert f.read() == data


def test_log_artifacts_of_a_directory_list_and_download_whole(client, tmp_path):
    src = tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.csv").write_text("x,y\n1,2\n")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(src), artifact_path="results")
    top = client.list_artifacts(run.info.run_id)
    assert [(f.path, f.is_dir) for f in top] == [("results", True)]
    inner = client.list_artifacts(run.info.run_id, "results")
    assert [(f.path, f.is_dir, f.file_size) for f in inner] == [
        ("results/a.txt", False, 5),
        ("results/sub", True, None),
    ]
    assert client.list_artifacts(run.info.run_id, "results/a.txt") == []
    got = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="results", dst_path=str(tmp_path / "dl")
    )
    assert open(os.path.join(got, "a.txt")).read() == "alpha"
    assert open(os.path.join(got, "sub", "b.csv")).read() == "x,y\n1,2\n"


def test_figures_text_and_dicts_round_trip(client, tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [2, 1, 3])
    with mlflow.start_run() as run:
        mlflow.log_figure(fig, "plots/curve.png")
        mlflow.log_text("hello kiln", "notes/readme.txt")
        mlflow.log_dict({"lr": 0.1, "layers": [8, 4]}, "config.json")
    plt.close(fig)
    base = run.info.artifact_uri
    assert mlflow.artifacts.load_text(f"{base}/notes/readme.txt") == "hello kiln"
    assert mlflow.artifacts.load_dict(f"{base}/config.json") == {"lr": 0.1, "layers": [8, 4]}
    png = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="plots/curve.png", dst_path=str(tmp_path / "p")
    )
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    paths = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert paths == {"plots", "notes", "config.json"}


def test_a_viewer_reads_but_cannot_write(use_team, team, tmp_path):
    use_team(team, "member")
    with mlflow.start_run() as run:
        mlflow.log_text("by the member", "m.txt")
    use_team(team, "viewer")
    assert mlflow.artifacts.load_text(f"{run.info.artifact_uri}/m.txt") == "by the member"
    src = tmp_path / "v.txt"
    src.write_text("no")
    with pytest.raises(Exception) as err:
        mlflow.MlflowClient().log_artifact(run.info.run_id, str(src))
    assert "403" in str(err.value) or "PERMISSION_DENIED" in str(err.value)


def test_another_team_reaches_none_of_a_runs_artifacts(use_team, team, other_team, tmp_path):
    use_team(team)
    with mlflow.start_run() as run:
        mlflow.log_dict({"secret": True}, "secret.json")
    uri = f"{run.info.artifact_uri}/secret.json"
    use_team(other_team)
    with pytest.raises(Exception) as err:
        mlflow.artifacts.load_text(uri)
    assert "404" in str(err.value) or "RESOURCE_DOES_NOT_EXIST" in str(err.value)
    with pytest.raises(MlflowException):
        mlflow.MlflowClient().list_artifacts(run.info.run_id)
    # And the owner still reads it.
    use_team(team, "viewer")
    assert json.loads(mlflow.artifacts.load_text(uri)) == {"secret": True}
