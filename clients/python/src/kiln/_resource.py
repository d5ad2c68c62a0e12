"""API objects as dicts with attribute access: ``ds.id`` and ``ds["id"]`` both work, and
every field the API answers is kept (the annotations list the documented ones)."""

from __future__ import annotations

from typing import Any


class Resource(dict):
    """A JSON object from the API. Fields read as attributes or keys."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __dir__(self):  # tab completion in notebooks
        return list(super().__dir__()) + [k for k in self.keys() if isinstance(k, str)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


def id_of(value: Any, what: str = "id") -> str:
    """The id of a resource, or the value itself when it is already an id string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "id" in value:
        return str(value["id"])
    ident = getattr(value, "id", None)
    if ident is not None:
        return str(ident)
    from .errors import KilnError

    raise KilnError("invalid_argument", f"expected a {what} (an id string or an object with `.id`), got {type(value).__name__}")
