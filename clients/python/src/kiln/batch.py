"""Batch predictions: score a whole dataset with a model version as a queued job, follow
it, and read the predictions as a DataFrame or a CSV file."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ._followed import Followed
from ._http import Transport
from ._resource import id_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas


class BatchPrediction(Followed):
    """A batch prediction. Fields of ``GET /v1/batch-predictions/{id}`` read as attributes
    (``b.state``, ``b.progress``, ``b.bad_rows``, ``b.bad_row_samples``, ``b.output``) or
    keys; they are as of the last :meth:`refresh` (which :meth:`wait` calls: a live bar in
    rows). Its id is also its job's: ``client.jobs.get(b.id).logs()`` reads its log."""

    _path = "/v1/batch-predictions"
    _noun = "batch prediction"

    def __repr__(self) -> str:
        p = self.data.get("progress") or {}
        return f"<BatchPrediction {self.id} {self.state} rows {p.get('rows_done')}/{p.get('rows')}>"

    def cancel(self) -> "BatchPrediction":
        """Stops it (its job): the parts already stored are kept."""
        self._http.json("POST", f"/v1/jobs/{self.id}/cancel")
        return self.refresh()

    def _show(self, pbar: Any) -> Any:
        from tqdm.auto import tqdm

        p = self.data.get("progress") or {}
        if pbar is None:
            pbar = tqdm(total=p.get("rows"), desc=f"batch …{self.id[-8:]}", unit="row", leave=True)
        if p.get("rows") and pbar.total != p["rows"]:
            pbar.total = p["rows"]
        pbar.set_postfix_str(f"{self.state} bad={self.data.get('bad_rows', 0)}", refresh=False)
        pbar.n = p.get("rows_done") or 0
        pbar.refresh()
        return pbar

    def download(self, path: str | os.PathLike[str], *, part: int | None = None,
                 progress: bool | None = None) -> Path:
        """Streams the predictions (every part joined under one header, or ``part=N``)
        into the CSV file ``path``; answers its path. Refused with
        ``KilnError(code="invalid_state")`` until it has succeeded."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        params = {"part": part} if part is not None else None
        try:
            with open(partial, "wb") as out:
                self._http.stream_to(f"/v1/batch-predictions/{self.id}/output", out, params=params,
                                     progress=progress, what=f"download {target.name}")
            os.replace(partial, target)
        finally:
            if partial.exists():
                partial.unlink()
        return target

    def to_pandas(self) -> "pandas.DataFrame":
        """The predictions as a DataFrame: ``row`` (the input row), the id column if any,
        then ``label`` and ``p_<label>`` per class, or ``value``."""
        import pandas as pd

        buf = io.BytesIO()
        self._http.stream_to(f"/v1/batch-predictions/{self.id}/output", buf, progress=False)
        buf.seek(0)
        return pd.read_csv(buf)


class BatchPredictions:
    """``client.batch_predictions``."""

    def __init__(self, http: Transport):
        self._http = http

    def create(self, model: Any, dataset: Any, *, version: int | None = None, alias: str | None = None,
               id_column: str | None = None, rows_per_part: int | None = None) -> BatchPrediction:
        """Queues a batch prediction (``POST /v1/batch-predictions``)::

            b = client.batch_predictions.create("wine", dataset=new_rows, alias="production")
            b.wait()
            b.to_pandas()

        ``model`` is a model name (or a ``ModelVersion``, whose version is taken); give
        ``version`` or ``alias``. ``dataset`` is a Dataset or its id (CSV or NPZ)."""
        name = model
        if not isinstance(model, str):
            name = getattr(model, "model", None) or model["model"]
            if version is None and alias is None:
                version = getattr(model, "version", None) or model["version"]
        body: dict[str, Any] = {"model": name, "dataset_id": id_of(dataset, "dataset")}
        for key, value in (("version", version), ("alias", alias), ("id_column", id_column),
                           ("rows_per_part", rows_per_part)):
            if value is not None:
                body[key] = value
        return BatchPrediction(self._http, self._http.json("POST", "/v1/batch-predictions", json_body=body))

    def get(self, batch: Any) -> BatchPrediction:
        return BatchPrediction(self._http, self._http.json("GET", f"/v1/batch-predictions/{id_of(batch, 'batch prediction')}"))

    def list(self, limit: int | None = 50) -> list[BatchPrediction]:
        """The team's batch predictions, newest first (``limit=None``: all)."""
        return [BatchPrediction(self._http, b) for b in self._http.paginate("/v1/batch-predictions", None, limit)]
