"""The serving benchmark's framework baseline: the same Kiln bundle served with LitServe
(0.2.19, its defaults: one inference worker, no batching), the Python serving framework a
team would pick instead of Kiln. It reuses flask_serve.py's bundle loading, PyTorch MLP and
preprocessing, and answers Kiln's predict route and body, so wrk sends every server the
same bytes.

    KILN_BUNDLE=/path/to/bundle.zip python litserve_serve.py PORT

Uvicorn's per-request access log is turned down to warnings (generous to the baseline).
"""

import sys

import litserve as ls
import torch

import flask_serve as bundle


class KilnBundleAPI(ls.LitAPI):
    def setup(self, device):
        self.model = bundle.MODEL

    def decode_request(self, request):
        return torch.tensor([bundle.encode(row) for row in request["instances"]],
                            dtype=torch.float32)

    def predict(self, x):
        with torch.no_grad():
            return torch.softmax(self.model(x), dim=-1).tolist()

    def encode_response(self, probabilities):
        labels = bundle.LABELS
        predictions = []
        for row in probabilities:
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append({"label": labels[best], "probabilities": dict(zip(labels, row))})
        return {"predictions": predictions, "model_version": 1, "deployment": "wine"}


if __name__ == "__main__":
    api = KilnBundleAPI(api_path="/v1/deployments/wine/predict")
    server = ls.LitServer(api, accelerator="cpu")
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
               generate_client_file=False)
