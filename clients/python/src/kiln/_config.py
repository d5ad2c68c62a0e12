"""Where the API is and which token to use: arguments, then the environment
(``KILN_API_URL``, ``KILN_TOKEN``, ``KILN_PROFILE``), then the ``kiln`` CLI's profile file,
``$XDG_CONFIG_HOME/kiln/config.toml`` (default ``~/.config/kiln/config.toml``)::

    [profiles.default]
    api_url = "http://127.0.0.1:8080"
    token = "kiln_..."

This is the order the CLI resolves them in, so a notebook and a shell agree.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import KilnError

DEFAULT_URL = "http://127.0.0.1:8080"


def config_path() -> Path | None:
    """The CLI's profile file: ``$XDG_CONFIG_HOME/kiln/config.toml`` or ``~/.config/...``."""
    base = os.environ.get("XDG_CONFIG_HOME")
    if base:
        return Path(base) / "kiln" / "config.toml"
    home = os.environ.get("HOME")
    return Path(home) / ".config" / "kiln" / "config.toml" if home else None


@dataclass(frozen=True)
class Resolved:
    url: str
    token: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"Resolved(url={self.url!r}, token={'***' if self.token else None})"


def resolve(
    url: str | None,
    token: str | None,
    profile: str | None,
    config: str | os.PathLike[str] | None,
) -> Resolved:
    profile_name = profile or os.environ.get("KILN_PROFILE") or "default"
    explicit = config is not None
    path = Path(config) if config is not None else config_path()
    entry: dict = {}
    if path is not None and path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise KilnError("invalid_config", f"{path} is not a valid Kiln config: {err}") from None
        profiles = data.get("profiles", {})
        if profile_name in profiles:
            entry = profiles[profile_name] or {}
        elif profile_name != "default":
            raise KilnError("invalid_config", f"profile `{profile_name}` not found in {path}")
    elif explicit:
        raise KilnError("invalid_config", f"config file {path} does not exist")
    elif profile_name != "default" and profile is not None:
        raise KilnError("invalid_config", f"profile `{profile_name}` asked for, but there is no config file")
    resolved_url = url or os.environ.get("KILN_API_URL") or entry.get("api_url") or DEFAULT_URL
    resolved_token = token or os.environ.get("KILN_TOKEN") or entry.get("token")
    return Resolved(url=str(resolved_url).rstrip("/"), token=resolved_token or None)
