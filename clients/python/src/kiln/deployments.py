"""Deployments: serve a model version behind a batching endpoint, and predict from
DataFrames."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ._http import Transport
from ._resource import Resource
from .errors import KilnError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

#: Rows sent per predict request (the API's default limit is 10,000).
PREDICT_CHUNK = 5000


class Deployment(Resource):
    """A deployment: ``name``, ``model``, ``alias`` or ``version``, ``status``
    (``loading``, ``ready``, ``unavailable``), ``traffic``, ``batching``,
    ``versions_loaded``, ``error``, ..."""

    id: str
    name: str
    model: str
    alias: str | None
    version: int | None
    status: str
    traffic: list
    batching: dict
    versions_loaded: list


class Deployments:
    """``client.deployments``."""

    def __init__(self, http: Transport):
        self._http = http

    def create(
        self,
        name: str,
        model: str,
        *,
        alias: str | None = None,
        version: int | None = None,
        max_batch_size: int | None = None,
        max_wait_ms: int | None = None,
        allow_extra_features: bool = False,
    ) -> Deployment:
        """Serves model ``model`` as ``name``: following ``alias`` (moving it rolls the
        deployment) or pinned to ``version`` (give exactly one). Answers once the version
        is loaded and taking traffic."""
        body: dict[str, Any] = {"name": name, "model": model, "allow_extra_features": allow_extra_features}
        if alias is not None:
            body["alias"] = alias
        if version is not None:
            body["version"] = int(version)
        batching = {k: v for k, v in (("max_batch_size", max_batch_size), ("max_wait_ms", max_wait_ms)) if v is not None}
        if batching:
            body["batching"] = batching
        return Deployment(self._http.json("POST", "/v1/deployments", json_body=body))

    def get(self, name: str) -> Deployment:
        return Deployment(self._http.json("GET", f"/v1/deployments/{name}"))

    def list(self, limit: int | None = None) -> list[Deployment]:
        return [Deployment(d) for d in self._http.paginate("/v1/deployments", None, limit)]

    def update(
        self,
        name: str,
        *,
        traffic: Sequence[Mapping[str, int]] | None = None,
        max_batch_size: int | None = None,
        max_wait_ms: int | None = None,
    ) -> Deployment:
        """Changes a deployment (``PATCH``): ``traffic=[{"version": 1, "weight": 10},
        {"version": 2, "weight": 90}]`` splits traffic (a canary), ``traffic=[]``
        follows the alias again; batching settings too."""
        body: dict[str, Any] = {}
        if traffic is not None:
            body["traffic"] = [dict(t) for t in traffic]
        batching = {k: v for k, v in (("max_batch_size", max_batch_size), ("max_wait_ms", max_wait_ms)) if v is not None}
        if batching:
            body["batching"] = batching
        return Deployment(self._http.json("PATCH", f"/v1/deployments/{name}", json_body=body))

    def delete(self, name: str) -> None:
        """Stops serving and removes the deployment."""
        self._http.json("DELETE", f"/v1/deployments/{name}")

    def predict(self, name: str, data: "pandas.DataFrame | Iterable[Mapping[str, Any]]") -> "pandas.DataFrame":
        """Predicts for every row of ``data`` (a DataFrame, or a list of dicts of raw
        feature values, as in the training CSV) and answers a DataFrame with one row per
        input row, in order, on the same index as the input DataFrame:

        - classification: ``label`` and one ``probability_<label>`` column per class;
        - regression: ``value``.

        ``df.attrs["model_version"]`` is the version that answered (the last chunk's,
        for more than 5,000 rows) and ``df.attrs["deployment"]`` the deployment. Missing
        values (NaN, None) are sent as missing. Rows the model cannot take raise
        ``KilnError`` 422 naming each bad field (``instances[3].petal_width``).
        """
        import pandas as pd

        index = None
        raw: Iterable[Mapping[Any, Any]]
        if isinstance(data, pd.DataFrame):
            index = data.index
            raw = data.to_dict(orient="records")
        else:
            raw = data
        records = [{str(k): _clean(v) for k, v in r.items()} for r in raw]
        if not records:
            raise KilnError("invalid_argument", "predict needs at least one row")
        rows: list[dict[str, Any]] = []
        version = None
        deployment = name
        for start in range(0, len(records), PREDICT_CHUNK):
            chunk = records[start : start + PREDICT_CHUNK]
            try:
                answer = self._http.json("POST", f"/v1/deployments/{name}/predict", json_body={"instances": chunk})
            except KilnError as err:
                if start and err.fields:  # name rows by their place in the whole input
                    err.details["fields"] = {_shift(k, start): v for k, v in err.fields.items()}
                    raise KilnError(err.code, err.message, status=err.status, details=err.details) from None
                raise
            version = answer.get("model_version")
            deployment = answer.get("deployment", name)
            for p in answer["predictions"]:
                row: dict[str, Any] = {}
                if "label" in p:
                    row["label"] = p["label"]
                    for cls, prob in (p.get("probabilities") or {}).items():
                        row[f"probability_{cls}"] = prob
                else:
                    row["value"] = p.get("value")
                rows.append(row)
        frame = pd.DataFrame(rows, index=index)
        frame.attrs["model_version"] = version
        frame.attrs["deployment"] = deployment
        return frame


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/NaT/None to None."""
    if value is None:
        return None
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, (str, bytes)):
        try:
            value = item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        import pandas as pd

        if value is pd.NaT or value is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def _shift(path: str, by: int) -> str:
    if path.startswith("instances[") and "]" in path:
        n, rest = path[len("instances[") :].split("]", 1)
        if n.isdigit():
            return f"instances[{int(n) + by}]{rest}"
    return path
