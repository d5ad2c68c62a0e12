"""The model registry: register a succeeded job as a model's next version, list and read
models and versions, move aliases, delete versions, download bundles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List

from ._http import Transport
from ._resource import Resource, id_of
from .errors import KilnError


class ModelVersion(Resource):
    """One registered version: ``model``, ``version``, ``job_id``, ``dataset_sha256``,
    ``bundle_sha256``, ``metrics`` (the job's final metrics), ``spec``, ``aliases``,
    ``created_at``."""

    model: str
    version: int
    job_id: str | None
    dataset_sha256: str | None
    bundle_sha256: str
    metrics: dict
    spec: dict
    aliases: list
    created_at: str


class Model(Resource):
    """A model: ``name``, ``latest_version``, ``aliases`` (``{"production": 3}``),
    ``created_at``."""

    name: str
    latest_version: int | None
    aliases: dict
    created_at: str


class Alias(Resource):
    """An alias after a move: ``model``, ``alias``, ``version``, ``previous_version``."""

    model: str
    alias: str
    version: int
    previous_version: int | None


class Models:
    """``client.models``."""

    def __init__(self, http: Transport):
        self._http = http

    def register(self, job: Any, name: str) -> ModelVersion:
        """Registers a succeeded job (a :class:`~kiln.Job` or its id) as the next version
        of model ``name`` and answers the version. ``KilnError(code="invalid_state")``
        (409) when the job has not succeeded."""
        if not isinstance(name, str) or not name:
            raise KilnError("invalid_argument", "register(job, name): name must be a model name")
        body = {"job_id": id_of(job, "job")}
        return ModelVersion(self._http.json("POST", f"/v1/models/{name}/versions", json_body=body))

    def list(self, limit: int | None = None) -> list[Model]:
        """The team's models with their aliases."""
        return [Model(m) for m in self._http.paginate("/v1/models", None, limit)]

    def get(self, name: str) -> Model:
        """One model (``GET /v1/models/{name}``)."""
        return Model(self._http.json("GET", f"/v1/models/{name}"))

    def versions(self, name: str, limit: int | None = None) -> List[ModelVersion]:
        """A model's versions, newest first."""
        return [ModelVersion(v) for v in self._http.paginate(f"/v1/models/{name}/versions", None, limit)]

    def version(self, name: str, version: int) -> ModelVersion:
        """One version of a model (from the versions list)."""
        for v in self._http.paginate(f"/v1/models/{name}/versions"):
            if v["version"] == version:
                return ModelVersion(v)
        raise KilnError("not_found", f"model `{name}` has no version {version}", status=404)

    def set_alias(self, name: str, alias: str, version: int) -> Alias:
        """Points ``alias`` (``production``, ``staging``, any name) of model ``name`` at
        ``version``; deployments following the alias roll to it."""
        return Alias(self._http.json("PUT", f"/v1/models/{name}/aliases/{alias}", json_body={"version": int(version)}))

    def delete_version(self, name: str, version: int) -> None:
        """Deletes a version (``DELETE /v1/models/{name}/versions/{v}``). Refused with
        ``KilnError(code="in_use")`` (409) while an alias or a deployment uses it."""
        self._http.json("DELETE", f"/v1/models/{name}/versions/{int(version)}")

    def download_bundle(self, name: str, version: int, path: str | os.PathLike[str]) -> Path:
        """Saves a version's model bundle (a zip) to ``path`` (a directory: as
        ``NAME-vN.kiln.zip`` in it)."""
        target = Path(path)
        if target.is_dir():
            target = target / f"{name}-v{int(version)}.kiln.zip"
        with open(target, "wb") as out:
            self._http.stream_to(f"/v1/models/{name}/versions/{int(version)}/bundle", out, what=target.name)
        return target
