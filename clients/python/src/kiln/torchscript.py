"""Bring your own PyTorch model: script (or trace) a ``torch.nn.Module``, check it runs,
upload it, and get the ``model`` part of a job spec.

::

    model = kiln.torchscript.upload(client, IrisNet(), torch.zeros(2, 4), name="irisnet",
                                    dataset=iris, target="species", task="classification")
    job = client.jobs.submit(dataset=iris, task="classification", target="species",
                             model=model, epochs=30)

What Kiln's worker expects of the module (checked here, before anything is submitted):

- ``forward`` takes one float32 tensor ``[batch, features]`` (NPZ image data:
  ``[batch, C, H, W]``) of standardised inputs, in the dataset's column order (the target
  left out; a category column becomes one input per category, one-hot);
- it answers ``[batch, classes]`` logits (classification; classes in sorted label order)
  or ``[batch]`` values (regression);
- it has trainable float32 parameters; Kiln trains them from their initial values.

Needs ``torch`` (``pip install "kiln-client[torch]"``).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from ._resource import Resource, id_of
from .errors import KilnError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .client import Client
    from .datasets import Dataset


class TorchScriptModel(Resource):
    """The ``model`` of a job spec: ``{"type": "torchscript", "dataset_id": ...}``.
    ``.upload`` is the uploaded module's :class:`~kiln.datasets.Dataset` record."""

    type: str
    dataset_id: str


class _quiet:
    """TorchScript is what Kiln's worker loads: torch's deprecation warnings about it are
    not the user's to act on."""

    def __enter__(self):
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _first_line(err: BaseException) -> str:
    """The line that says what went wrong: for TorchScript's interpreter errors the last
    ``SomeError: ...`` line of its traceback, else the first line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line):
            return line
    return lines[0]


def expected_input_shape(
    dataset: "Dataset",
    *,
    target: str | None = None,
    features: Sequence[str] | None = None,
) -> tuple[list[int], list[str]]:
    """The per-sample input shape Kiln's worker gives a model trained on ``dataset``, and
    the names of the inputs (CSV: one per number column, one per category of a category
    column). Raises ``KilnError`` when it cannot be known from the dataset's schema."""
    schema = dataset.get("schema") or {}
    fmt = dataset.get("format") or schema.get("format")
    if fmt == "npz":
        shape = list((schema.get("x") or {}).get("shape") or [])
        return shape[1:], []
    if fmt != "csv":
        raise KilnError("invalid_argument", f"dataset {dataset.get('id')} is {fmt}, not training data (csv or npz)")
    columns = {c["name"]: c for c in schema.get("columns", [])}
    if target is None:
        raise KilnError("invalid_argument", "target= is needed to check the module against a CSV dataset")
    if target not in columns:
        raise KilnError(
            "invalid_argument", f"target `{target}` is not a column of the dataset; its columns are {', '.join(columns)}"
        )
    if features is None:
        names = [n for n in columns if n != target]
    else:
        unknown = [f for f in features if f not in columns]
        if unknown:
            raise KilnError("invalid_argument", f"features {unknown} are not columns of the dataset")
        names = list(features)
    inputs: list[str] = []
    for name in names:
        column = columns[name]
        if column.get("type") == "category":
            distinct = column.get("distinct")
            if distinct is None:
                raise KilnError(
                    "invalid_argument",
                    f"column `{name}` has more than 100 categories; its input width cannot be known before training",
                )
            inputs.extend(f"{name}=<category {i}>" for i in range(distinct))
        else:
            inputs.append(name)
    return [len(inputs)], inputs


def _classes(dataset: "Dataset", target: str | None) -> int | None:
    schema = dataset.get("schema") or {}
    for column in schema.get("columns", []):
        if column["name"] == target:
            return column.get("distinct")
    return None


def upload(
    client: "Client",
    module: Any,
    example_input: "torch.Tensor",
    name: str,
    *,
    dataset: "str | Dataset | None" = None,
    target: str | None = None,
    features: Sequence[str] | None = None,
    task: Literal["classification", "regression"] | None = None,
    method: Literal["auto", "script", "trace"] = "auto",
) -> TorchScriptModel:
    """Scripts (or traces) ``module``, checks it, uploads it as a ``torchscript`` dataset
    named ``name`` and answers the job spec's ``model``.

    - ``example_input``: a float32 tensor ``[batch, ...]`` shaped like the training
      inputs (e.g. ``torch.zeros(2, 4)`` for Iris's four features).
    - ``method``: ``"script"`` (``torch.jit.script``), ``"trace"`` (``torch.jit.trace``
      on the example) or ``"auto"`` (script, else trace). A module that is already a
      ``ScriptModule`` is used as it is.
    - ``dataset`` (with ``target``, optional ``features`` and ``task``): the training
      data. The module's input width must match the number of inputs Kiln makes from
      it, else ``KilnError(code="input_width_mismatch")`` says both numbers, before
      anything is uploaded; with ``task``, the output shape is checked too.

    A module that does not run on the example, or has nothing to train, raises
    ``KilnError(code="invalid_module")``.
    """
    try:
        import torch
    except ImportError:
        raise KilnError(
            "invalid_argument", 'kiln.torchscript needs PyTorch: pip install "kiln-client[torch]"'
        ) from None
    if not isinstance(example_input, torch.Tensor):
        raise KilnError("invalid_argument", f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    if example_input.dim() < 2 or example_input.shape[0] < 1:
        raise KilnError(
            "invalid_argument",
            f"example_input must be a batch [batch, features...], got shape {list(example_input.shape)}",
        )
    if example_input.dtype != torch.float32:
        raise KilnError(
            "invalid_argument",
            f"example_input is {example_input.dtype}; Kiln trains on float32 inputs (use example_input.float())",
        )
    sample_shape = list(example_input.shape[1:])

    # 1. Against the dataset, before any work: the most common mistake.
    info = None
    if dataset is not None:
        info = dataset if isinstance(dataset, dict) and "schema" in dataset else client.datasets.get(id_of(dataset, "dataset"))
        expected, inputs = expected_input_shape(info, target=target, features=features)
        if expected != sample_shape:
            described = f" ({', '.join(inputs)})" if inputs and len(inputs) <= 12 else ""
            raise KilnError(
                "input_width_mismatch",
                f"the module takes inputs of shape [batch, {', '.join(map(str, sample_shape))}] but "
                f"dataset `{info.get('name')}` gives [batch, {', '.join(map(str, expected))}]{described}",
                details={"module_input": sample_shape, "dataset_input": expected, "inputs": inputs},
            )

    # 2. Script or trace.
    was_training = getattr(module, "training", False)
    scripted = None
    if isinstance(module, torch.jit.ScriptModule):
        scripted = module
    else:
        if not isinstance(module, torch.nn.Module):
            raise KilnError("invalid_module", f"expected a torch.nn.Module, got {type(module).__name__}")
        errors = []
        if method in ("auto", "script"):
            try:
                with _quiet():
                    scripted = torch.jit.script(module)
            except Exception as err:  # torch raises many kinds
                errors.append(f"torch.jit.script: {_first_line(err)}")
        if scripted is None and method in ("auto", "trace"):
            try:
                module.eval()
                with torch.no_grad(), _quiet():
                    scripted = torch.jit.trace(module, example_input)
            except Exception as err:
                errors.append(f"torch.jit.trace: {_first_line(err)}")
            finally:
                module.train(was_training)
        if scripted is None:
            raise KilnError("invalid_module", "cannot make TorchScript of the module: " + "; ".join(errors))

    # 3. It runs on the example, has parameters to train, answers the right shape.
    params = [p for p in scripted.parameters() if p.requires_grad]
    if not params:
        raise KilnError("invalid_module", "the module has no trainable parameters")
    wrong = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
    if wrong:
        raise KilnError("invalid_module", f"the module's parameters are {', '.join(wrong)}; Kiln trains float32 (module.float())")
    scripted.eval()
    try:
        with torch.no_grad():
            out = scripted(example_input)
    except Exception as err:
        raise KilnError(
            "invalid_module",
            f"the module does not run on an input of shape {list(example_input.shape)}: {_first_line(err)}",
        ) from None
    finally:
        scripted.train()
    if not isinstance(out, torch.Tensor):
        raise KilnError("invalid_module", f"the module returns {type(out).__name__}; Kiln needs one tensor")
    batch = example_input.shape[0]
    got = list(out.shape)
    if task == "classification":
        classes = _classes(info, target) if info is not None else None
        if len(got) != 2 or got[0] != batch or (classes is not None and got[1] != classes):
            wanted = f"[{batch}, {classes if classes is not None else 'classes'}] (one logit per class)"
            raise KilnError("invalid_module", f"for an input of shape {list(example_input.shape)} it returns {got}; expected {wanted}")
    elif task == "regression":
        if got not in ([batch], [batch, 1]):
            raise KilnError("invalid_module", f"for an input of shape {list(example_input.shape)} it returns {got}; expected [{batch}]")

    # 4. Save and upload.
    with tempfile.TemporaryDirectory(prefix="kiln-torchscript-") as tmp:
        path = Path(tmp) / f"{name}.pt"
        with _quiet():
            torch.jit.save(scripted, os.fspath(path))
        uploaded = client.datasets.upload(path, name, format="torchscript")
    model = TorchScriptModel({"type": "torchscript", "dataset_id": uploaded["id"]})
    object.__setattr__(model, "upload", uploaded)
    return model


class TorchScript:
    """``client.torchscript``: :func:`upload` bound to the client."""

    def __init__(self, client: "Client"):
        self._client = client

    def upload(self, module: Any, example_input: "torch.Tensor", name: str, **options: Any) -> TorchScriptModel:
        """See :func:`kiln.torchscript.upload`."""
        return upload(self._client, module, example_input, name, **options)

    upload.__doc__ = upload.__doc__
