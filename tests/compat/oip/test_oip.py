"""The stock OIP clients against Kiln: tritonclient.http (binary and JSON inputs, binary and
JSON outputs) and kserve's InferenceRESTClient (protocol v2): health, metadata, inference on a
classifier and a regressor equal to the native predict route, and bad requests answered 400
in the protocol's error shape."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from tritonclient.utils import InferenceServerException

from conftest import IRIS_FEATURES, native_predict

CLASSES = ["setosa", "versicolor", "virginica"]


def iris_matrix(rows, dtype=np.float32) -> np.ndarray:
    return np.array([[r[f] for f in IRIS_FEATURES] for r in rows], dtype=dtype)


def text(s) -> str:
    """A BYTES element: tritonclient gives bytes for binary outputs, str for JSON ones."""
    return s.decode() if isinstance(s, bytes) else s


def native_probabilities(predictions) -> np.ndarray:
    return np.array([[p["probabilities"][c] for c in CLASSES] for p in predictions])


def rounded(rows):
    """Rows with every number rounded to single precision, as an FP32 tensor carries them."""
    return [{k: (float(np.float32(v)) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def test_health_and_server_metadata(triton_client, iris):
    client = triton_client(None)
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "kiln"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(triton_client, team, iris, wine):
    client = triton_client(team.tokens["viewer"])
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", model_version=str(iris.version))
    assert not client.is_model_ready("iris", model_version="99")
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris"
    assert meta["versions"] == [str(iris.version)]
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        (f, "FP32", [-1]) for f in IRIS_FEATURES
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP32", [-1, 3]),
    ]
    assert meta["outputs"][1]["parameters"]["classes"] == CLASSES
    wine_meta = client.get_model_metadata("alcohol", model_version=str(wine.version))
    cultivar = next(i for i in wine_meta["inputs"] if i["name"] == "cultivar")
    assert cultivar["datatype"] == "BYTES"
    assert wine_meta["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [-1]}]


@pytest.mark.parametrize("binary_inputs", [True, False], ids=["binary-inputs", "json-inputs"])
@pytest.mark.parametrize("binary_outputs", [None, True, False], ids=["default-outputs", "binary-outputs", "json-outputs"])
def test_tritonclient_classification_equals_the_native_route(triton_client, team, iris, binary_inputs, binary_outputs):
    client = triton_client(team.tokens["member"])
    matrix = iris_matrix(iris.rows)
    tensor = triton.InferInput("input-0", list(matrix.shape), "FP32")
    tensor.set_data_from_numpy(matrix, binary_data=binary_inputs)
    outputs = None
    if binary_outputs is not None:
        outputs = [triton.InferRequestedOutput(n, binary_data=binary_outputs) for n in ("label", "probabilities")]
    result = client.infer("iris", [tensor], outputs=outputs, request_id="req-1")
    response = result.get_response()
    assert response["model_name"] == "iris"
    assert response["model_version"] == str(iris.version)
    assert response["id"] == "req-1"
    want = native_predict(team, "iris", rounded(iris.rows))
    labels = [text(s) for s in result.as_numpy("label")]
    assert labels == [p["label"] for p in want]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (150, 3)
    np.testing.assert_array_equal(probabilities.astype(np.float64), native_probabilities(want))


def test_tritonclient_one_tensor_per_feature_and_a_version(triton_client, team, iris):
    client = triton_client(team.tokens["member"])
    inputs = []
    for k, f in enumerate(IRIS_FEATURES):
        column = np.array([[r[f]] for r in iris.rows], dtype=np.float64)
        tensor = triton.InferInput(f, list(column.shape), "FP64")
        tensor.set_data_from_numpy(column, binary_data=k % 2 == 0)
        inputs.append(tensor)
    result = client.infer("iris", inputs, model_version=str(iris.version),
                          outputs=[triton.InferRequestedOutput("label")])
    want = native_predict(team, "iris", iris.rows)
    assert [text(s) for s in result.as_numpy("label")] == [p["label"] for p in want]
    assert result.as_numpy("probabilities") is None


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_regression_with_a_categorical_input(triton_client, team, wine, binary):
    client = triton_client(team.tokens["member"])
    inputs = []
    for f in wine.rows[0]:
        if f == "cultivar":
            column = np.array([r[f].encode() for r in wine.rows], dtype=np.object_)
            tensor = triton.InferInput(f, [len(wine.rows)], "BYTES")
        else:
            column = np.array([r[f] for r in wine.rows], dtype=np.float64)
            tensor = triton.InferInput(f, [len(wine.rows)], "FP64")
        tensor.set_data_from_numpy(column, binary_data=binary)
        inputs.append(tensor)
    result = client.infer("alcohol", inputs)
    value = result.as_numpy("value")
    assert value.dtype == np.float64 and value.shape == (len(wine.rows),)
    want = native_predict(team, "alcohol", wine.rows)
    np.testing.assert_array_equal(value, np.array([p["value"] for p in want]))


@pytest.mark.parametrize(
    "shape, datatype, data, message",
    [
        ([1, 3], "FP32", np.zeros((1, 3), np.float32), "neither a feature of this model nor an [N, 4] matrix"),
        ([1, 4], "FP64", np.zeros((1, 4), np.float32), "binary_data_size is 16 bytes but its shape holds 4 FP64 elements"),
        ([1, 4], "BYTES", np.array([[b"a", b"b", b"c", b"d"]], dtype=np.object_), "`a` is not a number"),
    ],
    ids=["shape", "datatype", "bytes-for-numbers"],
)
def test_tritonclient_bad_requests_raise_the_servers_400_message(triton_client, team, iris, shape, datatype, data, message):
    client = triton_client(team.tokens["member"])
    tensor = triton.InferInput("x", shape, datatype)
    # Bypass the client's own dtype check to send what a buggy client would send.
    tensor._raw_data = data.tobytes() if datatype != "BYTES" else b"".join(
        len(s).to_bytes(4, "little") + s for s in data.flatten())
    tensor._parameters["binary_data_size"] = len(tensor._raw_data)
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris", [tensor])
    assert err.value.status() == "400"
    assert message in err.value.message(), err.value.message()


def test_tritonclient_sees_404_for_another_teams_model(triton_client, other_team, iris):
    client = triton_client(other_team.tokens["maintainer"])
    assert not client.is_model_ready("iris")
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("iris")
    assert err.value.status() == "404"
    assert "not a deployment of your team" in err.value.message()


class BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_rest_client_v2_classification_and_regression(kiln_url, team, iris, wine, binary):
    async def go():
        config = RESTConfig(protocol="v2", auth=BearerAuth(team.tokens["member"]))
        async with InferenceRESTClient(config) as client:
            assert await client.is_server_live(kiln_url)
            assert await client.is_server_ready(kiln_url)
            assert await client.is_model_ready(kiln_url, "iris")
            matrix = iris_matrix(iris.rows[:20], np.float64)
            tensor = InferInput("input-0", list(matrix.shape), "FP64")
            tensor.set_data_from_numpy(matrix, binary_data=binary)
            request = InferRequest(model_name="iris", infer_inputs=[tensor], request_id="k-1",
                                   request_outputs=[RequestedOutput("label"), RequestedOutput("probabilities")])
            response = await client.infer(kiln_url, request, model_name="iris")
            assert response.model_name == "iris"
            assert response.id == "k-1"
            outputs = {o.name: o for o in response.outputs}
            want = native_predict(team, "iris", iris.rows[:20])
            assert [text(s) for s in outputs["label"].data] == [p["label"] for p in want]
            np.testing.assert_array_equal(
                outputs["probabilities"].as_numpy().astype(np.float64).reshape(20, 3), native_probabilities(want))

            inputs = []
            for f in wine.rows[0]:
                if f == "cultivar":
                    t = InferInput(f, [10], "BYTES")
                    t.set_data_from_numpy(np.array([r[f] for r in wine.rows[:10]], dtype=np.object_), binary_data=binary)
                else:
                    t = InferInput(f, [10], "FP64")
                    t.set_data_from_numpy(np.array([r[f] for r in wine.rows[:10]]), binary_data=binary)
                inputs.append(t)
            response = await client.infer(kiln_url, InferRequest(model_name="alcohol", infer_inputs=inputs),
                                          model_name="alcohol")
            values = response.outputs[0].as_numpy()
            want = native_predict(team, "alcohol", wine.rows[:10])
            np.testing.assert_array_equal(values, np.array([p["value"] for p in want]))

    run(go())


def test_kserve_rest_client_bad_request_is_400_with_the_oip_message(kiln_url, team, iris):
    async def go():
        config = RESTConfig(protocol="v2")
        async with InferenceRESTClient(config) as client:
            tensor = InferInput("input-0", [1, 3], "FP32", data=[1.0, 2.0, 3.0])
            with pytest.raises(httpx.HTTPStatusError) as err:
                # kserve's per-call headers: the other way to send the token.
                await client.infer(kiln_url, InferRequest(model_name="iris", infer_inputs=[tensor]),
                                   model_name="iris", headers={"Authorization": f"Bearer {team.tokens['member']}"})
            assert err.value.response.status_code == 400
            assert "neither a feature of this model" in str(err.value)
            body = err.value.response.json()
            assert list(body) == ["error"]

    run(go())
