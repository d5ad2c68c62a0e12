"""Kiln's Python SDK: datasets, training jobs, tracked runs, the model registry and
deployments, from a notebook.

::

    import kiln

    client = kiln.Client()                      # KILN_API_URL, KILN_TOKEN or the CLI's profile
    iris = client.datasets.upload("data/iris.csv")
    job = client.jobs.submit(dataset=iris, task="classification", target="species",
                             model={"type": "mlp", "hidden": [32]}, epochs=40)
    job.wait()
    job.metrics()                               # a long-form DataFrame

Every failed call raises :class:`KilnError`.
"""

from . import torchscript
from .batch import BatchPrediction
from .client import Client
from .datasets import Dataset
from .deployments import Deployment
from .errors import KilnError
from .jobs import Job, LogLine
from .models import Alias, Model, ModelVersion
from .runs import Run, RunInfo
from .studies import Study

__version__ = "0.1.0"

__all__ = [
    "Alias",
    "BatchPrediction",
    "Client",
    "Dataset",
    "Deployment",
    "Job",
    "KilnError",
    "LogLine",
    "Model",
    "ModelVersion",
    "Study",
    "Run",
    "RunInfo",
    "torchscript",
    "__version__",
]
