"""The serving benchmark's baseline: a Kiln model bundle served the way a reader of a
"deploy your PyTorch model with Flask" article would serve it.

Flask (under gunicorn, sync workers) loads the same bundle Kiln serves (model.json +
model.safetensors), rebuilds the MLP in PyTorch from the same virtualenv, applies the same
fitted preprocessing, and runs one forward pass per request. It answers Kiln's predict
route and body, so the load generator sends both servers the same bytes.

    KILN_BUNDLE=/path/to/bundle.zip gunicorn -w 2 -b 127.0.0.1:8000 flask_serve:app

BENCH_TORCH_THREADS sets libtorch's intra-op threads per worker (default: PyTorch's own).
"""

import json
import os
import re
import struct
import zipfile

import torch
from flask import Flask, jsonify, request

# Unset: PyTorch's own default (one intra-op thread per core), as an article's reader runs it.
if os.environ.get("BENCH_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))


def load_bundle(path):
    with zipfile.ZipFile(path) as bundle:
        meta = json.loads(bundle.read("model.json"))
        raw = bundle.read("model.safetensors")
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    data = raw[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        assert info["dtype"] == "F32", info["dtype"]
        tensors[name] = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float32).reshape(
            info["shape"]
        )
    return meta, tensors


def build_mlp(meta, tensors):
    arch = meta["architecture"]
    assert arch["type"] in ("mlp", "linear"), "the baseline serves MLP and linear bundles"
    activations = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU, "sigmoid": torch.nn.Sigmoid}
    layers = {}
    for name, tensor in tensors.items():
        match = re.search(r"fc(\d+)\.(weight|bias)$", name)
        if match:
            layers.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
    modules = []
    for index in sorted(layers):
        weight, bias = layers[index]["weight"], layers[index]["bias"]
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        modules.append(linear)
        if index != max(layers):
            modules.append(activations[arch.get("activation", "relu")]())
    return torch.nn.Sequential(*modules).eval()


META, TENSORS = load_bundle(os.environ["KILN_BUNDLE"])
MODEL = build_mlp(META, TENSORS)
COLUMNS = META["preprocessing"]["input"]["columns"]
LABELS = META["preprocessing"]["target"]["labels"]

app = Flask(__name__)


def encode(row):
    features = []
    for column in COLUMNS:
        value = row.get(column["name"])
        if column["type"] == "number":
            features.append((float(value) - column["shift"]) / column["scale"])
        else:
            features.extend(1.0 if str(value) == c else 0.0 for c in column["categories"])
    return features


@app.post("/v1/deployments/<name>/predict")
def predict(name):
    instances = request.get_json()["instances"]
    try:
        x = torch.tensor([encode(row) for row in instances], dtype=torch.float32)
    except (TypeError, ValueError, KeyError) as err:
        return jsonify({"error": {"code": "validation_failed", "message": str(err), "details": {}}}), 422
    with torch.no_grad():
        probabilities = torch.softmax(MODEL(x), dim=-1).tolist()
    predictions = []
    for row in probabilities:
        best = max(range(len(row)), key=row.__getitem__)
        predictions.append({"label": LABELS[best], "probabilities": dict(zip(LABELS, row))})
    return jsonify({"predictions": predictions, "model_version": 1, "deployment": name})
