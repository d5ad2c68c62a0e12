"""Progress bars: tqdm's notebook-aware bar (``tqdm.auto``), or a no-op."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

#: Files at least this large get a progress bar by default (8 MiB).
LARGE_BYTES = 8 << 20


class _Null:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    n = 0
    total = None

    def refresh(self) -> None:
        pass


@contextlib.contextmanager
def bar(total: int | None, desc: str, show: bool | None, unit: str = "B") -> Iterator[Any]:
    """A byte-counting bar when ``show`` (``None``: only when ``total`` is large)."""
    if show is None:
        show = total is not None and total >= LARGE_BYTES
    if not show:
        yield _Null()
        return
    from tqdm.auto import tqdm

    pbar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, unit_divisor=1024, leave=True)
    try:
        yield pbar
    finally:
        pbar.close()
