"""Tracked runs: training that happens in the notebook logs its params and metrics to Kiln.

::

    with client.start_run("resnet-lr-0.1", {"lr": 0.1}) as run:
        for epoch in range(10):
            ...
            run.log_metrics({"train_loss": loss, "val_accuracy": acc}, step=epoch)

``log_metrics`` only appends to an in-memory buffer; a background thread sends the points
in batches of up to 10,000 (the API's limit per ``POST /v1/runs/{id}/metrics``), at least
every ``flush_interval`` seconds. Leaving the ``with`` block flushes every point and ends
the run ``succeeded``; an exception (``KeyboardInterrupt`` included) ends it ``failed``
and propagates. The API keeps one value per (name, step): a batch resent after a transient
failure never duplicates points (a step logged twice keeps the later value when both go
in one batch; batches in flight at once may land in either order).
"""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

from ._frames import series_frame
from ._http import Transport
from ._resource import Resource, id_of
from .errors import KilnError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

#: Most points one ``POST /v1/runs/{id}/metrics`` may carry (the API's limit).
MAX_POINTS_PER_CALL = 10_000

#: Errors worth sending a batch again for (the API upserts by (name, step)).
_TRANSIENT = {"connection_error", "timeout", "overloaded", "unavailable", "internal"}


class RunInfo(Resource):
    """A run as the API answers it: ``id``, ``name``, ``params``, ``status``
    (``running``, ``succeeded``, ``failed``), ``job_id`` (set when the run is a Kiln job),
    ``created_at``, ``finished_at``."""

    id: str
    name: str
    params: dict
    status: str
    job_id: str | None
    created_at: str
    finished_at: str | None


class _Clock:
    """RFC 3339 timestamps, formatted once per millisecond."""

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""

    def now(self) -> str:
        ms = int(time.time() * 1000)
        if ms != self._ms:
            dt = datetime.fromtimestamp(ms / 1000, timezone.utc)
            self._text = dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
            self._ms = ms
        return self._text


class Run:
    """A tracked run, with buffered metric logging. Made by :meth:`kiln.Client.start_run`.

    Use it as a context manager (or call :meth:`finish` yourself). Logging methods raise
    at once on a bad point (a non-finite value, a negative step); a batch the API refuses
    or that cannot be sent after retries is raised by the next logging call, by
    :meth:`flush` or on leaving the ``with`` block.

    Options (keywords of :meth:`kiln.Client.start_run`): ``batch_size`` points per
    request (at most 10,000, the default); ``flush_interval`` seconds a partial batch
    waits at most (1.0); ``max_buffered`` points held before ``log_metrics`` blocks
    (1,000,000); ``senders`` background threads, i.e. requests in flight at once (4:
    the API's inserts then overlap with the next batch's transfer).
    """

    def __init__(
        self,
        http: Transport,
        data: Mapping[str, Any],
        *,
        batch_size: int = MAX_POINTS_PER_CALL,
        flush_interval: float = 1.0,
        max_buffered: int = 1_000_000,
        senders: int = 4,
    ):
        if not 1 <= batch_size <= MAX_POINTS_PER_CALL:
            raise KilnError("invalid_argument", f"batch_size must be 1 to {MAX_POINTS_PER_CALL}")
        self._http = http
        self.info = RunInfo(data)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_buffered = max(max_buffered, batch_size)
        self._buf: list[tuple[str, int, float, str]] = []
        self._cond = threading.Condition()
        self._pending = 0  # points logged but not yet acknowledged by the API
        self._flush_asked = False
        self._closing = False
        self._error: KilnError | None = None
        self._next_step = 0
        self._clock = _Clock()
        self._names: dict[str, str] = {}
        self._finished = False
        self._threads = [
            threading.Thread(target=self._send_loop, name=f"kiln-run-{self.id[-8:]}-{i}", daemon=True)
            for i in range(max(1, senders))
        ]
        for t in self._threads:
            t.start()

    # -- fields -------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.info["id"]

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def params(self) -> dict:
        return dict(self.info.get("params") or {})

    @property
    def status(self) -> str:
        return self.info["status"]

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.name!r} {self.status}>"

    # -- logging ------------------------------------------------------------------------
    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Logs one point; see :meth:`log_metrics`."""
        self.log_metrics({name: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Logs one value per series at ``step`` (an int ≥ 0; default: one more than the
        step of the previous call without one, from 0). Values may be Python or numpy
        numbers or 0-d tensors; they must be finite. Returns at once: the points are sent
        by a background thread. Blocks only while a million points wait to be sent."""
        if self._error is not None:
            self._raise_error()
        if self._closing:
            raise KilnError("invalid_state", f"run {self.id} has ended; start a new run to log more")
        if step is None:
            step = self._next_step
        elif not isinstance(step, int) or isinstance(step, bool):
            try:
                whole = int(step)  # numpy integers
            except (TypeError, ValueError):
                raise KilnError("invalid_argument", f"step must be an integer, got {step!r}") from None
            if whole != step:
                raise KilnError("invalid_argument", f"step must be an integer, got {step!r}")
            step = whole
        if step < 0:
            raise KilnError("invalid_argument", f"step must be ≥ 0, got {step}")
        self._next_step = step + 1
        ts = self._clock.now()
        points = []
        for name, value in metrics.items():
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise KilnError("invalid_argument", f"metric {name!r}: {value!r} is not a number") from None
            if not math.isfinite(v):
                raise KilnError("invalid_argument", f"metric {name!r} at step {step}: {v} is not a finite number")
            if not isinstance(name, str) or not 1 <= len(name) <= 250 or "\0" in name:
                raise KilnError("invalid_argument", f"metric name {name!r}: must be 1 to 250 characters, without NUL")
            points.append((name, step, v, ts))
        with self._cond:
            while self._pending >= self._max_buffered and self._error is None:
                self._cond.wait(0.1)
            self._buf.extend(points)
            self._pending += len(points)
            if len(self._buf) >= self._batch_size:
                self._cond.notify()

    def flush(self, timeout: float | None = None) -> None:
        """Blocks until every point logged so far has been accepted by the API; raises
        the sending error if a batch failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_asked = True
            self._cond.notify_all()
            while self._pending > 0 and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise KilnError("timeout", f"{self._pending} points of run {self.id} still unsent after {timeout} s")
                self._cond.wait(0.05 if left is None else min(left, 0.05))
            self._flush_asked = False
        if self._error is not None:
            self._raise_error()

    # -- background sending -------------------------------------------------------------
    def _take(self) -> list[tuple[str, int, float, str]] | None:
        """The next batch to send, waiting for one; ``None`` once closing and empty."""
        with self._cond:
            waited_since = time.monotonic()
            while True:
                if self._buf and (
                    len(self._buf) >= self._batch_size
                    or self._flush_asked
                    or self._closing
                    or time.monotonic() - waited_since >= self._flush_interval
                ):
                    batch = self._buf[: self._batch_size]
                    del self._buf[: self._batch_size]
                    if self._buf:
                        self._cond.notify()  # another sender may take the next batch
                    return batch
                if self._closing and not self._buf:
                    return None
                self._cond.wait(self._flush_interval)

    def _encode(self, batch: list[tuple[str, int, float, str]]) -> bytes:
        names = self._names
        parts = []
        for name, step, value, ts in batch:
            quoted = names.get(name)
            if quoted is None:
                quoted = names[name] = json.dumps(name)
            parts.append(f'{{"name":{quoted},"step":{step},"value":{value!r},"ts":"{ts}"}}')
        return ('{"points":[' + ",".join(parts) + "]}").encode()

    def _send_loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            body = self._encode(batch)
            error = None
            for attempt in range(6):
                try:
                    self._http.request(
                        "POST",
                        f"/v1/runs/{self.id}/metrics",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                    error = None
                    break
                except KilnError as err:
                    error = err
                    if err.code not in _TRANSIENT and not (err.code == "http_error" and (err.status or 0) >= 500):
                        break
                    time.sleep(min(0.2 * 2**attempt, 5.0))
            with self._cond:
                self._pending -= len(batch)
                if error is not None and self._error is None:
                    self._error = error
                self._cond.notify_all()

    def _raise_error(self) -> None:
        err = self._error
        assert err is not None
        raise KilnError(
            err.code,
            f"sending metrics of run {self.id} failed: {err.message}",
            status=err.status,
            details=err.details,
            method=err.method,
            url=err.url,
        )

    def _stop_threads(self, drop: bool = False) -> None:
        """Ends the sender threads, after they sent what is buffered (``drop``: after the
        batches already in flight only; the rest is discarded)."""
        with self._cond:
            if drop:
                self._pending -= len(self._buf)
                self._buf.clear()
            self._closing = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    # -- ending ---------------------------------------------------------------------------
    def finish(self, status: str = "succeeded") -> RunInfo:
        """Sends what is buffered, then ends the run ``succeeded`` or ``failed``."""
        if status not in ("succeeded", "failed"):
            raise KilnError("invalid_argument", f"status must be 'succeeded' or 'failed', not {status!r}")
        if self._finished:
            return self.info
        try:
            self.flush()
        except KilnError:
            # Points were lost: the run ends failed, and the caller hears why.
            self._stop_threads(drop=True)
            try:
                self.info = RunInfo(self._http.json("POST", f"/v1/runs/{self.id}/finish", json_body={"status": "failed"}))
                self._finished = True
            except KilnError:
                pass
            raise
        self._stop_threads()
        self.info = RunInfo(self._http.json("POST", f"/v1/runs/{self.id}/finish", json_body={"status": status}))
        self._finished = True
        return self.info

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("succeeded")
            return
        # The training failed: keep what was logged, end the run failed, let it propagate.
        try:
            try:
                self.flush(timeout=60)
            except KilnError:
                pass
            self._stop_threads(drop=True)
            self.info = RunInfo(self._http.json("POST", f"/v1/runs/{self.id}/finish", json_body={"status": "failed"}))
            self._finished = True
        except KilnError:
            pass

    # -- reading ------------------------------------------------------------------------
    def refresh(self) -> RunInfo:
        """Reads the run again (``GET /v1/runs/{id}``)."""
        self.info = RunInfo(self._http.json("GET", f"/v1/runs/{self.id}"))
        return self.info

    def metrics(self, name: str | None = None) -> "pandas.DataFrame":
        """The run's metric series as a long-form DataFrame: columns ``series``, ``step``
        and ``value``, one row per point (only what was already sent: :meth:`flush`
        first to include everything logged)."""
        body = self._http.json("GET", f"/v1/runs/{self.id}/metrics", params={"name": name})
        return series_frame(body["series"], "step")


class Runs:
    """``client.runs``."""

    def __init__(self, http: Transport):
        self._http = http

    def start(self, name: str, params: Mapping[str, Any] | None = None, **options: Any) -> Run:
        """Creates a run (``POST /v1/runs``) and answers it, ready to log. ``options``:
        ``batch_size``, ``flush_interval``, ``max_buffered``, ``senders`` (see :class:`Run`)."""
        data = self._http.json("POST", "/v1/runs", json_body={"name": name, "params": dict(params or {})})
        return Run(self._http, data, **options)

    def get(self, run: str | Run) -> RunInfo:
        """One run by id (``GET /v1/runs/{id}``)."""
        return RunInfo(self._http.json("GET", f"/v1/runs/{id_of(run, 'run')}"))

    def list(self, limit: int | None = 50) -> list[RunInfo]:
        """The team's runs (Kiln jobs included), newest first."""
        return [RunInfo(r) for r in self._http.paginate("/v1/runs", None, limit)]

    def metrics(self, run: str | Run, name: str | None = None) -> "pandas.DataFrame":
        """A run's (or a job's) metrics as a long-form DataFrame (``series``, ``step``,
        ``value``)."""
        body = self._http.json("GET", f"/v1/runs/{id_of(run, 'run')}/metrics", params={"name": name})
        return series_frame(body["series"], "step")

    def delete(self, run: str | Run) -> None:
        """Deletes a run and its metrics (``DELETE /v1/runs/{id}``); ``KilnError``
        ``in_use`` (409) while something references it."""
        self._http.json("DELETE", f"/v1/runs/{id_of(run, 'run')}")
