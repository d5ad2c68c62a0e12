"""``kiln.Client``: one object per API and token, with a namespace per resource."""

from __future__ import annotations

import os
from typing import Any, Mapping

import httpx

from ._config import resolve
from ._http import Transport
from .batch import BatchPredictions
from .studies import Studies
from .datasets import Datasets
from .deployments import Deployments
from .jobs import Jobs
from .models import Models
from .runs import Run, Runs
from .torchscript import TorchScript


class Client:
    """A connection to a Kiln API.

    ``url`` and ``token`` default to ``KILN_API_URL`` and ``KILN_TOKEN``, then to the
    ``kiln`` CLI's profile file (``~/.config/kiln/config.toml``, profile ``profile`` or
    ``KILN_PROFILE`` or ``default``), then to ``http://127.0.0.1:8080``, exactly as the CLI
    resolves them. ``timeout`` is per request, in seconds.

    Namespaces: :attr:`datasets`, :attr:`jobs`, :attr:`runs`, :attr:`models`,
    :attr:`deployments`, :attr:`batch_predictions`, :attr:`studies`, :attr:`torchscript`. Every failed call raises
    :class:`~kiln.KilnError`. Use it as a context manager, or call :meth:`close`, to
    release its connections.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        profile: str | None = None,
        config: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ):
        resolved = resolve(url, token, profile, config)
        self.url = resolved.url
        self._has_token = resolved.token is not None
        self._http = Transport(resolved.url, resolved.token, timeout, http)
        self.datasets = Datasets(self._http)
        self.jobs = Jobs(self._http)
        self.runs = Runs(self._http)
        self.models = Models(self._http)
        self.deployments = Deployments(self._http)
        self.batch_predictions = BatchPredictions(self._http)
        self.studies = Studies(self._http)
        self.torchscript = TorchScript(self)

    def __repr__(self) -> str:  # the token is never shown
        return f"<kiln.Client {self.url} token={'set' if self._has_token else 'none'}>"

    def start_run(self, name: str, params: Mapping[str, Any] | None = None, **options: Any) -> Run:
        """Starts a tracked run for training that happens here (a notebook) and answers
        it; use it as a context manager::

            with client.start_run("sweep-1", {"lr": 0.01}) as run:
                run.log_metrics({"loss": 0.3, "acc": 0.9}, step=1)

        See :class:`kiln.Run` for buffering and ``options``."""
        return self.runs.start(name, params, **options)

    def health(self) -> dict:
        """``GET /readyz``: ``{"status", "checks"}`` (raises ``KilnError`` 503 when not
        ready)."""
        return self._http.json("GET", "/readyz")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
