"""What the API runs in the background and the SDK follows: a training job, a batch
prediction. Fields as of the last refresh, attribute access, and one ``wait`` loop."""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping

from ._http import Transport
from .errors import KilnError

#: States a job does not leave.
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "pruned"})


class Followed:
    """The base of :class:`~kiln.Job` and :class:`~kiln.BatchPrediction`. Subclasses name
    their route (``_path``), their noun for messages (``_noun``) and draw their bar
    (``_show``)."""

    _path = ""
    _noun = ""

    def __init__(self, http: Transport, data: Mapping[str, Any]):
        self._http = http
        self.data: dict[str, Any] = dict(data)

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def state(self) -> str:
        """``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled``, or ``pruned`` (a
        study's trial its early-stopping rule stopped)."""
        return self.data["state"]

    @property
    def done(self) -> bool:
        """True once it has ended (succeeded, failed, cancelled or pruned)."""
        return self.state in TERMINAL

    @property
    def error(self) -> str | None:
        return self.data.get("error")

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("data") or {}
        if name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def refresh(self):
        """Reads it again from the API; answers itself."""
        self.data = self._http.json("GET", f"{self._path}/{self.id}")
        return self

    def _show(self, pbar: Any) -> Any:  # pragma: no cover - each subclass draws its own
        raise NotImplementedError

    def _failure_details(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "error": self.error}

    def wait(self, progress: bool = True, *, poll: float = 1.0, timeout: float | None = None,
             raise_on_failure: bool = True):
        """Blocks until it ends and answers it.

        With ``progress=True`` a live bar shows how far it is (in a notebook: a widget bar,
        when ipywidgets is installed). Ending ``failed`` or ``cancelled`` raises
        ``KilnError(code="job_failed")`` with its error (``raise_on_failure=False``: answer
        it instead). ``timeout`` seconds without an end raise ``KilnError(code="timeout")``.

        Interrupting the wait (Ctrl-C, the notebook's stop button) does **not** cancel it:
        it keeps running on its worker, the bar closes, a line says so and the
        ``KeyboardInterrupt`` goes on. Call ``cancel()`` to stop it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pbar = None
        try:
            while True:
                self.refresh()
                if progress:
                    pbar = self._show(pbar)
                if self.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise KilnError("timeout", f"{self._noun} {self.id} is still {self.state} after {timeout} s")
                time.sleep(poll)
        except KeyboardInterrupt:
            if pbar is not None:
                pbar.close()
                pbar = None
            print(
                f"stopped waiting; {self._noun} {self.id} goes on ({self.state}). "
                ".wait() to follow it again, .cancel() to stop it.",
                file=sys.stderr,
            )
            raise
        finally:
            if pbar is not None:
                pbar.close()
        if raise_on_failure and self.state != "succeeded":
            raise KilnError(
                "job_failed",
                f"{self._noun} {self.id} ended {self.state}" + (f": {self.error}" if self.error else ""),
                details=self._failure_details(),
            )
        return self
