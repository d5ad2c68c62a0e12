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


def _multipart(monkeypatch, chunk: int) -> None:
    """The client's proxied multipart upload, for files of any size, in parts of ``chunk``."""
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "1")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(chunk))


def test_multipart_upload_reassembles_the_parts_in_order(client, team, tmp_path, monkeypatch):
    _multipart(monkeypatch, 1024 * 1024)
    data = os.urandom(4 * 1024 * 1024 + 4321)  # five parts, the last one short
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(src), artifact_path="big")
    out = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="big/model.bin", dst_path=str(tmp_path / "dl")
    )
    with open(out, "rb") as f:
        assert f.read() == data
    listed = client.list_artifacts(run.info.run_id, "big")
    assert [(a.path, a.file_size) for a in listed] == [("big/model.bin", len(data))]
    # Nothing of the upload is left beside the artifact: the run lists only what it logged.
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["big"]


def test_multipart_parts_need_the_uploads_secret_and_bad_completes_are_refused(client, team, tmp_path):
    import httpx

    http = team.http("member")
    with mlflow.start_run() as run:
        pass
    # As on MLflow's server: the route names the directory, the body's `path` the file.
    prefix = f"/api/2.0/mlflow-artifacts/mpu/{{}}/{run.info.experiment_id}/{run.info.run_id}/artifacts"
    created = http.post(prefix.format("create"), json={"path": "/tmp/x.bin", "num_parts": 2})
    assert created.status_code == 200, created.text
    body = created.json()
    upload_id, credentials = body["upload_id"], body["credentials"]
    assert [c["part_number"] for c in credentials] == [1, 2]
    # The part URL alone (what an access log shows) grants nothing; the tracking token does
    # not replace the upload's secret either.
    bare = httpx.put(credentials[0]["url"], content=b"a" * 10)
    assert bare.status_code == 401 and bare.json()["error_code"] == "UNAUTHENTICATED"
    wrong = httpx.put(credentials[0]["url"], content=b"a", headers={"X-Kiln-Upload-Secret": "0" * 64})
    assert wrong.status_code == 403 and wrong.json()["error_code"] == "PERMISSION_DENIED"
    beyond = httpx.put(credentials[0]["url"][:-1] + "3", content=b"a", headers=credentials[0]["headers"])
    assert beyond.status_code == 400 and beyond.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    first = httpx.put(credentials[0]["url"], content=b"first ", headers=credentials[0]["headers"])
    assert first.status_code == 200 and first.headers["ETag"]
    # Completing before every part is there names the missing part, and keeps the upload.
    early = http.post(prefix.format("complete"), json={"path": "x.bin", "upload_id": upload_id, "parts": [
        {"part_number": 1, "etag": first.headers["ETag"]}, {"part_number": 2, "etag": "x"}]})
    assert early.status_code == 400 and "[2]" in early.json()["message"], early.text
    second = httpx.put(credentials[1]["url"], content=b"second", headers=credentials[1]["headers"])
    assert second.status_code == 200
    # A part uploaded again replaces the first attempt; the earlier ETag is refused.
    again = httpx.put(credentials[0]["url"], content=b"FIRST ", headers=credentials[0]["headers"])
    stale = http.post(prefix.format("complete"), json={"path": "x.bin", "upload_id": upload_id, "parts": [
        {"part_number": 1, "etag": first.headers["ETag"]}, {"part_number": 2, "etag": second.headers["ETag"]}]})
    assert stale.status_code == 400 and "ETag" in stale.json()["message"], stale.text
    # Another path's complete is refused; a viewer cannot complete.
    assert http.post(prefix.format("complete"), json={"path": "y.bin", "upload_id": upload_id, "parts": []}).status_code == 400
    assert http.post(prefix.format("complete"), json={"upload_id": upload_id, "parts": []}).status_code == 400
    viewer = team.http("viewer")
    assert viewer.post(prefix.format("complete"), json={"path": "x.bin", "upload_id": upload_id, "parts": []}).status_code == 403
    done = http.post(prefix.format("complete"), json={"path": "/home/me/x.bin", "upload_id": upload_id, "parts": [
        {"part_number": 1, "etag": again.headers["ETag"]}, {"part_number": 2, "etag": second.headers["ETag"]}]})
    assert done.status_code == 200, done.text
    got = http.get(f"/api/2.0/mlflow-artifacts/artifacts/{run.info.experiment_id}/{run.info.run_id}/artifacts/x.bin")
    assert got.content == b"FIRST second"
    # The upload is gone once complete: its parts' URLs and a second complete find nothing.
    late = httpx.put(credentials[1]["url"], content=b"late", headers=credentials[1]["headers"])
    assert late.status_code == 404 and late.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_multipart_abort_deletes_the_upload(client, team, tmp_path):
    import httpx

    http = team.http("member")
    with mlflow.start_run() as run:
        pass
    prefix = f"/api/2.0/mlflow-artifacts/mpu/{{}}/{run.info.experiment_id}/{run.info.run_id}/artifacts/out"
    body = http.post(prefix.format("create"), json={"path": "z.bin", "num_parts": 1}).json()
    cred = body["credentials"][0]
    assert httpx.put(cred["url"], content=b"zzz", headers=cred["headers"]).status_code == 200
    assert http.post(prefix.format("abort"), json={"path": "z.bin", "upload_id": body["upload_id"]}).status_code == 200
    assert httpx.put(cred["url"], content=b"zzz", headers=cred["headers"]).status_code == 404
    # Nothing was written at the artifact's path.
    assert http.get(f"/api/2.0/mlflow-artifacts/artifacts/{run.info.experiment_id}/{run.info.run_id}/artifacts/out/z.bin").status_code == 404
    bad = http.post(prefix.format("create"), json={"path": "z.bin", "num_parts": 0})
    assert bad.status_code == 400 and "num_parts" in bad.json()["message"]


def test_another_team_cannot_create_an_upload_on_a_run(use_team, team, other_team):
    use_team(team)
    with mlflow.start_run() as run:
        pass
    intruder = other_team.http("member")
    answer = intruder.post(
        f"/api/2.0/mlflow-artifacts/mpu/create/{run.info.experiment_id}/{run.info.run_id}/artifacts",
        json={"path": "a.bin", "num_parts": 1},
    )
    assert answer.status_code == 404 and answer.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
