"""A user's own PyTorch module: scripted, checked, uploaded, trained by Kiln, served; an
input width that does not fit the dataset is refused before anything is sent."""

from __future__ import annotations

import pytest
import torch

import kiln


class IrisNet(torch.nn.Module):
    def __init__(self, inputs: int = 4, outputs: int = 3):
        super().__init__()
        self.hidden = torch.nn.Linear(inputs, 16)
        self.out = torch.nn.Linear(16, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class Untraceable(torch.nn.Module):
    """Scripting fails (a Python-only construct), tracing works."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.layer(x) * float(len({1, 2}))  # sets of ints are not TorchScript


def test_a_module_trains_and_serves(client, iris, iris_frame):
    torch.manual_seed(0)
    model = kiln.torchscript.upload(
        client, IrisNet(), torch.zeros(2, 4), name="irisnet", dataset=iris, target="species", task="classification"
    )
    assert model == {"type": "torchscript", "dataset_id": model.upload.id}
    assert client.datasets.get(model.dataset_id).format == "torchscript"
    job = client.jobs.submit(
        dataset=iris, task="classification", target="species", model=model, epochs=20, learning_rate=0.02, device="cpu"
    )
    job.wait(progress=False, timeout=600)
    assert job.spec["model"] == {"type": "torchscript", "dataset_id": model.dataset_id}
    assert job.final_metrics["val_accuracy"] > 0.5
    version = client.models.register(job, "irisnet")
    client.deployments.create("irisnet", "irisnet", version=version.version)
    predicted = client.deployments.predict("irisnet", iris_frame.drop(columns="species").head(5))
    assert len(predicted) == 5 and "label" in predicted.columns


def test_trace_when_scripting_fails_and_the_client_namespace(client):
    model = client.torchscript.upload(Untraceable(), torch.zeros(3, 4), name="traced")
    assert model.type == "torchscript" and model.upload.format == "torchscript"
    with pytest.raises(kiln.KilnError) as err:
        client.torchscript.upload(Untraceable(), torch.zeros(3, 4), name="traced", method="script")
    assert err.value.code == "invalid_module" and "torch.jit.script" in err.value.message


def test_an_input_width_that_does_not_fit_the_dataset(client, iris):
    before = len(client.datasets.list(name="wide"))
    with pytest.raises(kiln.KilnError) as err:
        kiln.torchscript.upload(client, IrisNet(5), torch.zeros(2, 5), name="wide", dataset=iris, target="species")
    e = err.value
    assert e.code == "input_width_mismatch"
    assert "[batch, 5]" in e.message and "[batch, 4]" in e.message
    assert "sepal_length, sepal_width, petal_length, petal_width" in e.message
    assert e.details["module_input"] == [5] and e.details["dataset_input"] == [4]
    assert len(client.datasets.list(name="wide")) == before  # nothing was uploaded

    # Fewer features chosen: the module must take that many.
    with pytest.raises(kiln.KilnError) as err:
        kiln.torchscript.upload(
            client, IrisNet(), torch.zeros(2, 4), name="wide", dataset=iris, target="species", features=["petal_length"]
        )
    assert err.value.details["dataset_input"] == [1]


def test_modules_kiln_cannot_train_are_refused(client, iris):
    with pytest.raises(kiln.KilnError) as err:  # the example does not fit the module
        kiln.torchscript.upload(client, IrisNet(5), torch.zeros(2, 4), name="m")
    assert err.value.code == "invalid_module" and "does not run on an input of shape [2, 4]" in err.value.message
    with pytest.raises(kiln.KilnError) as err:  # wrong number of classes
        kiln.torchscript.upload(
            client, IrisNet(4, 2), torch.zeros(2, 4), name="m", dataset=iris, target="species", task="classification"
        )
    assert err.value.code == "invalid_module" and "[2, 3]" in err.value.message
    with pytest.raises(kiln.KilnError) as err:
        kiln.torchscript.upload(client, IrisNet(), torch.zeros(2, 4, dtype=torch.float64), name="m")
    assert "float32" in err.value.message
    with pytest.raises(kiln.KilnError) as err:
        kiln.torchscript.upload(client, torch.nn.Identity(), torch.zeros(2, 4), name="m")
    assert "no trainable parameters" in err.value.message


def test_npz_data_is_checked_by_its_sample_shape(client):
    import numpy as np

    rng = np.random.default_rng(8)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    arrays = client.datasets.upload((x, y), name="blobs-ts")
    model = kiln.torchscript.upload(client, IrisNet(6, 2), torch.zeros(2, 6), name="blobnet", dataset=arrays, task="classification")
    job = client.jobs.submit(dataset=arrays, task="classification", model=model, epochs=5, device="cpu")
    job.wait(progress=False, timeout=600)
    assert job.state == "succeeded"
    with pytest.raises(kiln.KilnError) as err:
        kiln.torchscript.upload(client, IrisNet(7, 2), torch.zeros(2, 7), name="blobnet", dataset=arrays)
    assert err.value.code == "input_width_mismatch"
    assert (err.value.details["module_input"], err.value.details["dataset_input"]) == ([7], [6])
