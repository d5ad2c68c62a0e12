"""Datasets: upload a file, a pandas DataFrame or numpy arrays (streamed, never read whole
into memory), list, get, download, delete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Union, cast

from ._http import Transport
from ._resource import Resource, id_of
from .errors import KilnError
from .progress import bar

if TYPE_CHECKING:  # pragma: no cover
    import numpy
    import pandas

#: Upload chunk size.
CHUNK = 1 << 20


class Dataset(Resource):
    """One version of a named dataset, as ``POST/GET /v1/datasets`` answer it."""

    id: str
    name: str
    version: int
    format: str  # csv, npz or torchscript
    sha256: str
    size_bytes: int
    #: CSV: ``{"format","rows","columns":[{"name","type","missing","distinct",...}],
    #: "label_candidates"}``; NPZ: ``{"format","rows","x":{"shape"},"y":{"shape","integer"}}``.
    schema: dict
    created_at: str

    @property
    def columns(self) -> list[str]:
        """CSV column names (``[]`` for other formats)."""
        return [c["name"] for c in self.schema.get("columns", [])]


DataLike = Union[str, "os.PathLike[str]", "pandas.DataFrame", tuple, dict]


def _chunks(file: BinaryIO, pbar: Any) -> Iterator[bytes]:
    while True:
        chunk = file.read(CHUNK)
        if not chunk:
            return
        pbar.update(len(chunk))
        yield chunk


class Datasets:
    """``client.datasets``."""

    def __init__(self, http: Transport):
        self._http = http

    def upload(
        self,
        data: DataLike,
        name: str | None = None,
        *,
        format: str | None = None,
        progress: bool | None = None,
    ) -> Dataset:
        """Uploads a dataset and answers its new version (with the schema the API inferred).

        ``data`` is one of:

        - a path to a ``.csv`` file (with a header line), an ``.npz`` archive with arrays
          ``x`` and ``y``, or a TorchScript ``.pt`` (``format="torchscript"``);
        - a :class:`pandas.DataFrame` (sent as CSV, without the index);
        - numpy arrays ``(X, y)`` or ``{"x": X, "y": y}`` (sent as ``.npz``).

        The file is streamed in 1 MiB chunks, so its size is not bounded by memory;
        a DataFrame or arrays are written to a temporary file first. A progress bar
        is shown for files of 8 MiB and more (``progress=True``/``False`` forces it).
        ``name`` defaults to the file's stem; it is required for in-memory data.
        Other bytes under the same name make its next version; the same bytes again
        answer the version that already holds them.
        """
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if not path.is_file():
                raise KilnError("invalid_argument", f"{path} is not a file")
            return self._upload_file(path, name or path.stem, format, progress)
        if _is_dataframe(data):
            if not name:
                raise KilnError("invalid_argument", "name= is required when uploading a DataFrame")
            with tempfile.TemporaryDirectory(prefix="kiln-upload-") as tmp:
                path = Path(tmp) / f"{name}.csv"
                cast("pandas.DataFrame", data).to_csv(path, index=False)
                return self._upload_file(path, name, format or "csv", progress)
        if isinstance(data, (tuple, list, dict)):
            if not name:
                raise KilnError("invalid_argument", "name= is required when uploading arrays")
            import numpy as np

            if isinstance(data, dict):
                missing = {"x", "y"} - set(data)
                if missing:
                    raise KilnError("invalid_argument", f"arrays need keys `x` and `y`; missing {sorted(missing)}")
                x, y = data["x"], data["y"]
            else:
                if len(data) != 2:
                    raise KilnError("invalid_argument", f"pass arrays as (X, y), got {len(data)} items")
                x, y = data
            x, y = np.asarray(x), np.asarray(y)
            if len(x) != len(y):
                raise KilnError("invalid_argument", f"X has {len(x)} rows but y has {len(y)}")
            with tempfile.TemporaryDirectory(prefix="kiln-upload-") as tmp:
                path = Path(tmp) / f"{name}.npz"
                np.savez(path, x=x, y=y)
                return self._upload_file(path, name, format or "npz", progress)
        raise KilnError(
            "invalid_argument",
            f"cannot upload a {type(data).__name__}: give a path, a pandas DataFrame or (X, y) arrays",
        )

    def _upload_file(self, path: Path, name: str, format: str | None, progress: bool | None) -> Dataset:
        size = path.stat().st_size
        csv = (format or ("csv" if path.suffix.lower() == ".csv" else "")) == "csv"
        content_type = "text/csv" if csv else "application/octet-stream"
        with open(path, "rb") as file, bar(size, f"upload {path.name}", progress) as pbar:
            answer = self._http.json(
                "POST",
                "/v1/datasets",
                params={"name": name, "format": format},
                content=_chunks(file, pbar),
                headers={"Content-Type": content_type},
                timeout=None if size > (64 << 20) else 300.0,
            )
        return Dataset(answer)

    def list(self, name: str | None = None, limit: int | None = None) -> list[Dataset]:
        """The team's datasets, newest first (every page; ``name=`` only that name's
        versions; ``limit=`` at most that many)."""
        return [Dataset(d) for d in self._http.paginate("/v1/datasets", {"name": name}, limit)]

    def get(self, dataset: str | Dataset) -> Dataset:
        """One dataset version by id."""
        return Dataset(self._http.json("GET", f"/v1/datasets/{id_of(dataset, 'dataset')}"))

    def download(self, dataset: str | Dataset, path: str | os.PathLike[str], *, progress: bool | None = None) -> Path:
        """Streams the dataset's bytes (``GET /v1/datasets/{id}/content``) into ``path``
        (a directory: into a file named after the dataset there). Answers the file's path."""
        ident = id_of(dataset, "dataset")
        target = Path(path)
        if target.is_dir():
            info = dataset if isinstance(dataset, Dataset) else self.get(ident)
            suffix = {"csv": ".csv", "npz": ".npz", "torchscript": ".pt"}.get(info.format, "")
            target = target / f"{info.name}-v{info.version}{suffix}"
        partial = target.with_name(target.name + ".part")
        try:
            with open(partial, "wb") as out:
                self._http.stream_to(f"/v1/datasets/{ident}/content", out, progress=progress, what=f"download {target.name}")
            os.replace(partial, target)
        finally:
            if partial.exists():
                partial.unlink()
        return target

    def delete(self, dataset: str | Dataset) -> None:
        """Deletes a dataset version. Refused with ``KilnError(code="in_use")`` (409) while
        a job or model version still uses it; ``err.details`` names them."""
        self._http.json("DELETE", f"/v1/datasets/{id_of(dataset, 'dataset')}")


def _is_dataframe(data: Any) -> bool:
    cls = type(data)
    return cls.__name__ == "DataFrame" and cls.__module__.startswith("pandas")
