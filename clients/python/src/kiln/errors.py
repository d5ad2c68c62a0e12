"""The one exception the SDK raises: :class:`KilnError`."""

from __future__ import annotations

from typing import Any, Mapping


class KilnError(Exception):
    """An error from the Kiln API, or on the way to it.

    Every failed call raises this one type. It carries the API's error body
    (``{"error": {"code", "message", "details"}}``) as attributes:

    ``code``
        The API's snake_case code (``not_found``, ``validation_failed``, ``forbidden``,
        ``in_use``, ...), or one of the SDK's own for errors that never reached the API:
        ``connection_error`` (the API cannot be reached), ``timeout``,
        ``input_width_mismatch`` and ``invalid_module`` (:mod:`kiln.torchscript`),
        ``job_failed`` (:meth:`kiln.Job.wait`), ``invalid_argument``.
    ``message``
        A sentence for a human.
    ``details``
        The API's ``details`` object (for 422: ``details["fields"]``, a dict of
        ``{"field.path": "what is wrong"}``).
    ``status``
        The HTTP status, or ``None`` when no answer came.

    ``str(err)`` shows the code, status and message, and every offending field of a 422
    on its own line.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.details: dict[str, Any] = dict(details or {})
        self.method = method
        self.url = url
        super().__init__(self.__str__())

    @property
    def fields(self) -> dict[str, str]:
        """The offending fields of a validation error (``details["fields"]``), else ``{}``."""
        fields = self.details.get("fields")
        return dict(fields) if isinstance(fields, Mapping) else {}

    def __str__(self) -> str:
        where = f" ({self.status})" if self.status is not None else ""
        text = f"{self.code}{where}: {self.message}"
        fields = self.fields
        if fields:
            width = max(len(k) for k in fields)
            lines = [f"  {k.ljust(width)}  {v}" for k, v in sorted(fields.items())]
            text += "\n" + "\n".join(lines)
        return text

    def __repr__(self) -> str:
        return (
            f"KilnError(code={self.code!r}, status={self.status!r}, message={self.message!r}, "
            f"details={self.details!r})"
        )

    def __reduce__(self):  # picklable (multiprocessing, joblib)
        return (_rebuild, (self.code, self.message, self.status, self.details, self.method, self.url))


def _rebuild(code, message, status, details, method, url):  # pragma: no cover - pickle helper
    return KilnError(code, message, status=status, details=details, method=method, url=url)
