"""Training jobs: submit a spec, follow it with a live progress bar, read its metrics as a
DataFrame and its logs, cancel and retry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping, overload

from ._followed import TERMINAL, Followed  # noqa: F401  (TERMINAL: kiln.jobs' public name)
from ._frames import series_frame
from ._http import Transport
from ._resource import Resource, id_of
from .errors import KilnError

if TYPE_CHECKING:  # pragma: no cover
    import pandas


#: Keyword arguments of :meth:`Jobs.submit` that go under ``hyperparameters``.
HYPERPARAMETERS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "weight_decay",
    "seed",
    "validation_split",
    "early_stopping_patience",
)


class LogLine(Resource):
    """One log line of a job: ``ts``, ``level``, ``message``, ``attempt``."""

    ts: str
    level: str
    message: str
    attempt: int | None


class Job(Followed):
    """A training job. Fields of ``GET /v1/jobs/{id}`` read as attributes (``job.state``,
    ``job.progress``, ``job.metrics_final``...) or keys (``job["error"]``); they are as of
    the last :meth:`refresh` (which :meth:`wait` calls: a live bar of epochs and the latest
    value of each metric series)."""

    _path = "/v1/jobs"
    _noun = "job"

    # -- fields -------------------------------------------------------------------------
    @property
    def progress(self) -> dict[str, Any]:
        """``{"epoch": done so far or None, "epochs": planned}``."""
        return dict(self.data.get("progress") or {})

    @property
    def final_metrics(self) -> dict[str, float]:
        """The metrics of the job's result (after it succeeded), e.g. ``val_accuracy``."""
        return dict(self.data.get("metrics") or {})

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.data.get("spec") or {})

    def __repr__(self) -> str:
        p = self.progress
        epochs = f" epoch {p.get('epoch')}/{p.get('epochs')}" if p.get("epochs") else ""
        return f"<Job {self.id} {self.state}{epochs}>"

    def _failure_details(self) -> dict[str, Any]:
        return {"job_id": self.id, "state": self.state, "error": self.error}

    # -- actions ------------------------------------------------------------------------
    def cancel(self) -> "Job":
        """Asks the job to stop: a queued job ends ``cancelled`` at once, a running one
        within a heartbeat or a batch. ``KilnError(code="invalid_state")`` once it ended."""
        self.data = self._http.json("POST", f"/v1/jobs/{self.id}/cancel")
        return self

    def retry(self) -> "Job":
        """Queues a failed or cancelled job again; it resumes from its last checkpoint."""
        self.data = self._http.json("POST", f"/v1/jobs/{self.id}/retry")
        return self

    def metrics(self, name: str | None = None) -> "pandas.DataFrame":
        """The job's metric series as a long-form DataFrame: columns ``series``
        (``train_loss``, ``val_loss``, ``val_accuracy``, ...), ``epoch`` and ``value``, one
        row per point. ``name=`` only that series. Wide form (one column per series):
        ``job.metrics().pivot(index="epoch", columns="series", values="value")``."""
        body = self._http.json("GET", f"/v1/jobs/{self.id}/metrics", params={"name": name})
        return series_frame(body["series"], "epoch")

    @overload
    def logs(self, follow: Literal[False] = False, *, limit: int = 500) -> list[LogLine]: ...

    @overload
    def logs(self, follow: Literal[True], *, limit: int = 500) -> Iterator[LogLine]: ...

    def logs(self, follow: bool = False, *, limit: int = 500):
        """The job's log lines, oldest first: a list of every line so far, or with
        ``follow=True`` an iterator that yields lines as they are written (long-polling)
        and ends when the job has ended and every line was read::

            for line in job.logs(follow=True):
                print(line.ts, line.level, line.message)
        """
        if follow:
            return self._follow(limit)
        lines: list[LogLine] = []
        cursor = None
        while True:
            page = self._http.json("GET", f"/v1/jobs/{self.id}/logs", params={"limit": limit, "cursor": cursor})
            lines.extend(LogLine(item) for item in page["items"])
            if not page["items"] or len(page["items"]) < limit:
                return lines
            cursor = page.get("next_cursor")

    def _follow(self, limit: int) -> Iterator[LogLine]:
        cursor = None
        while True:
            page = self._http.json(
                "GET",
                f"/v1/jobs/{self.id}/logs",
                params={"limit": limit, "cursor": cursor, "wait": 20},
                timeout=60.0,
            )
            for item in page["items"]:
                yield LogLine(item)
            cursor = page.get("next_cursor") or cursor
            if page.get("done"):
                return

    def _show(self, pbar: Any) -> Any:
        from tqdm.auto import tqdm

        p = self.progress
        epochs, epoch = p.get("epochs"), p.get("epoch") or 0
        if pbar is None:
            pbar = tqdm(total=epochs, desc=f"job …{self.id[-8:]}", unit="epoch", leave=True)
        if epochs and pbar.total != epochs:
            pbar.total = epochs
        postfix = [self.state]
        if epoch:
            try:
                series = self._http.json("GET", f"/v1/jobs/{self.id}/metrics")["series"]
            except KilnError:
                series = {}
            for name in sorted(series):
                if series[name]:
                    postfix.append(f"{name}={series[name][-1][1]:.4g}")
        pbar.set_postfix_str(" ".join(postfix), refresh=False)
        pbar.n = epoch
        pbar.refresh()
        return pbar


class Jobs:
    """``client.jobs``."""

    def __init__(self, http: Transport):
        self._http = http

    def submit(self, spec: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """Submits a training job (``POST /v1/jobs``) and answers it (``queued``).

        Give the job spec as a dict, as keyword arguments, or both (keywords win)::

            job = client.jobs.submit(
                dataset=iris,                   # a Dataset, or dataset_id="..."
                task="classification", target="species",
                model={"type": "mlp", "hidden": [32]},   # or model="linear"
                epochs=40, batch_size=16, learning_rate=0.01,
            )

        ``epochs``, ``batch_size``, ``learning_rate``, ``optimizer``, ``weight_decay``,
        ``seed``, ``validation_split`` and ``early_stopping_patience`` go under
        ``hyperparameters``. A spec the API refuses raises ``KilnError`` 422 listing every
        offending field. With ``idempotency_key`` the same key and spec again answer the
        same job.
        """
        body: dict[str, Any] = {k: v for k, v in dict(spec or {}).items()}
        hyper = dict(body.get("hyperparameters") or {})
        for key, value in fields.items():
            if key in HYPERPARAMETERS:
                hyper[key] = value
            elif key == "dataset":
                body["dataset_id"] = id_of(value, "dataset")
            elif key == "model" and isinstance(value, str):
                body["model"] = {"type": value}
            elif key == "hyperparameters":
                hyper.update(value)
            else:
                body[key] = value
        if "dataset" in body and "dataset_id" not in body:
            body["dataset_id"] = id_of(body.pop("dataset"), "dataset")
        if isinstance(body.get("model"), Mapping):
            body["model"] = dict(body["model"])  # e.g. kiln.torchscript's TorchScriptModel
        if hyper:
            body["hyperparameters"] = hyper
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job(self._http, self._http.json("POST", "/v1/jobs", json_body=body, headers=headers))

    def get(self, job: str | Job) -> Job:
        """One job by id."""
        return Job(self._http, self._http.json("GET", f"/v1/jobs/{id_of(job, 'job')}"))

    def list(self, state: str | None = None, limit: int | None = 50) -> list[Job]:
        """The team's jobs, newest first (``state=`` only those; ``limit=None``: all)."""
        return [Job(self._http, j) for j in self._http.paginate("/v1/jobs", {"state": state}, limit)]
