"""The one place HTTP happens: an ``httpx.Client`` with the token, and every answer that is
not 2xx turned into a :class:`~kiln.errors.KilnError` carrying the API's error body."""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping

import httpx

from .errors import KilnError


def _error_from_response(response: httpx.Response) -> KilnError:
    request = response.request
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = err.get("code")
        message = err.get("message")
        details = err.get("details") or {}
        if not isinstance(details, dict):
            details = {"details": details}
    if not code:
        code = "http_error"
        text = response.text.strip()
        message = f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text[:500]}" if text else "")
    return KilnError(
        code,
        message or "",
        status=response.status_code,
        details=details,
        method=request.method,
        url=str(request.url),
    )


class Transport:
    """A thin wrapper over :class:`httpx.Client`: base URL, bearer token, errors as
    :class:`KilnError` (connection failures included)."""

    def __init__(self, url: str, token: str | None, timeout: float, http: httpx.Client | None = None):
        self.url = url
        headers = {"User-Agent": "kiln-client-python/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = http or httpx.Client(
            base_url=url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )

    def close(self) -> None:
        self._http.close()

    def _wrap(self, err: httpx.HTTPError, method: str, path: str) -> KilnError:
        where = f"{self.url}{path}"
        if isinstance(err, httpx.TimeoutException):
            return KilnError("timeout", f"{method} {where} timed out: {err}", method=method, url=where)
        if isinstance(err, httpx.ConnectError):
            return KilnError(
                "connection_error",
                f"cannot reach the Kiln API at {self.url} ({err}); is kiln-api running and is "
                "KILN_API_URL right?",
                method=method,
                url=where,
            )
        return KilnError("connection_error", f"{method} {where} failed: {err}", method=method, url=where)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Sends one request; answers the response when 2xx, else raises KilnError."""
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body, allow_nan=False).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        elif content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = timeout
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=clean, headers=headers, **kwargs)
        except httpx.HTTPError as err:
            raise self._wrap(err, method, path) from None
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def paginate(self, path: str, params: Mapping[str, Any] | None = None, limit: int | None = None) -> Iterator[Any]:
        """Every item of a list route, page by page (``?cursor=``), up to ``limit`` items."""
        query = dict(params or {})
        query.setdefault("limit", 500 if limit is None else min(limit, 500))
        seen = 0
        while True:
            page = self.json("GET", path, params=query)
            for item in page["items"]:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    def stream_to(self, path: str, out, params: Mapping[str, Any] | None = None, progress: bool | None = None, what: str = "") -> int:
        """Streams a GET's body into the binary file ``out``; answers the bytes written."""
        from .progress import bar

        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from_response(response)
                total = int(response.headers.get("content-length") or 0) or None
                written = 0
                with bar(total, what, progress) as pbar:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                        written += len(chunk)
                        pbar.update(len(chunk))
                return written
        except httpx.HTTPError as err:
            raise self._wrap(err, "GET", path) from None
