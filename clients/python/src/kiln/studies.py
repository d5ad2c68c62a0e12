"""Hyperparameter studies: a search over a job spec's fields, run on the server as trials
through the queue (the client need not stay alive), with the trials as a DataFrame and
the best trial's model registered in one call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ._followed import Followed
from ._http import Transport
from ._resource import id_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas

#: States a study does not leave.
STUDY_ENDED = frozenset({"succeeded", "stopped", "failed"})


class Study(Followed):
    """A study. Fields of ``GET /v1/studies/{id}`` read as attributes (``s.state``,
    ``s.best_trial``, ``s.counts``, ``s.trials``) or keys, as of the last :meth:`refresh`
    (which :meth:`wait` calls: a live bar in trials)."""

    _path = "/v1/studies"
    _noun = "study"

    def __repr__(self) -> str:
        best = self.data.get("best_trial") or {}
        return f"<Study {self.id} {self.data.get('name')} {self.state} best={best.get('objective')}>"

    @property
    def done(self) -> bool:
        """True once it has ended (succeeded, stopped or failed)."""
        return self.state in STUDY_ENDED

    def _failure_details(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "reason": self.data.get("reason")}

    @property
    def error(self) -> str | None:
        return self.data.get("reason") if self.state != "succeeded" else None

    def stop(self) -> "Study":
        """Stops it: no new trials; queued and running ones are cancelled."""
        self.data = self._http.json("POST", f"/v1/studies/{self.id}/stop")
        return self

    def register_best(self, model: str):
        """Registers the best finished trial's model as a version of ``model``; answers the
        :class:`~kiln.ModelVersion`."""
        from .models import ModelVersion

        return ModelVersion(self._http.json("POST", f"/v1/studies/{self.id}/register",
                                            json_body={"model": model}))

    def trials_frame(self) -> "pandas.DataFrame":
        """The trials as a DataFrame: ``number``, ``state``, ``objective``, ``epochs``,
        ``promotions``, ``job_id`` and one column per parameter (by its path)."""
        import pandas as pd

        self.refresh()
        rows = []
        for t in self.data.get("trials", []):
            row = {k: t.get(k) for k in ("number", "state", "objective", "epochs", "promotions", "job_id")}
            for path, value in (t.get("params") or {}).items():
                row[path] = value
            rows.append(row)
        return pd.DataFrame(rows)

    def _show(self, pbar: Any) -> Any:
        from tqdm.auto import tqdm

        total = self.data["spec"]["max_trials"]
        counts = self.data.get("counts") or {}
        finished = sum(counts.get(k, 0) for k in ("succeeded", "pruned", "failed", "cancelled"))
        if pbar is None:
            pbar = tqdm(total=total, desc=f"study {self.data.get('name')}", unit="trial", leave=True)
        best = self.data.get("best_trial")
        metric = self.data["spec"]["objective"]["metric"]
        postfix = f"{self.state} running={counts.get('running', 0)} pruned={counts.get('pruned', 0)}"
        if best:
            postfix += f" best {metric}={best['objective']:.4f}"
        pbar.set_postfix_str(postfix, refresh=False)
        pbar.n = finished
        pbar.refresh()
        return pbar


class Studies:
    """``client.studies``."""

    def __init__(self, http: Transport):
        self._http = http

    def create(self, name: str, base: Mapping[str, Any], parameters: Mapping[str, Any],
               objective: Mapping[str, Any], **options: Any) -> Study:
        """Starts a study (``POST /v1/studies``)::

            study = client.studies.create(
                "digits-lr", base=spec,
                parameters={"hyperparameters.learning_rate": {"type": "float", "min": 1e-3, "max": 0.3, "log": True},
                            "model.hidden": {"type": "categorical", "values": [[32], [64]]}},
                objective={"metric": "val_accuracy", "goal": "maximize"},
                algorithm="tpe", max_trials=12, parallel_trials=2,
                early_stopping={"type": "asha", "min_epochs": 2, "reduction_factor": 3})
            study.wait()
            study.trials_frame()

        ``options``: ``algorithm``, ``seed``, ``max_trials``, ``parallel_trials``,
        ``max_failed_trials``, ``early_stopping`` (docs/studies.md). ``base`` is a job spec
        (its ``dataset_id`` may be a Dataset)."""
        base = dict(base)
        if "dataset_id" in base and not isinstance(base["dataset_id"], str):
            base["dataset_id"] = id_of(base["dataset_id"], "dataset")
        body: dict[str, Any] = {"name": name, "base": base, "parameters": dict(parameters),
                                "objective": dict(objective)}
        body.update({k: v for k, v in options.items() if v is not None})
        return Study(self._http, self._http.json("POST", "/v1/studies", json_body=body))

    def get(self, study: Any) -> Study:
        return Study(self._http, self._http.json("GET", f"/v1/studies/{id_of(study, 'study')}"))

    def list(self, limit: int | None = 50) -> list[Study]:
        """The team's studies, newest first (without their trials; ``limit=None``: all)."""
        return [Study(self._http, s) for s in self._http.paginate("/v1/studies", None, limit)]
