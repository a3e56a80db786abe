"""Request and response values passed between the HTTP server and the handlers."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qs

API_CONTENT_TYPES = ("application/json", "application/vnd.shoptet.v1.0")


@dataclass
class Request:
    method: str
    path: str  # raw (still percent-encoded) path without the query string
    query: dict[str, str]
    headers: Message
    body: bytes
    client_ip: str
    params: dict[str, str] = field(default_factory=dict)  # decoded regex groups of the matched route
    eshop_id: int | None = None  # set once known, for the request log

    def json(self) -> Any:
        """The JSON body; raises ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))

    def fields(self) -> dict[str, str]:
        """A JSON object body or a form-encoded body, as a flat dict (OAuth endpoints accept both)."""
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type or self.body.lstrip().startswith(b"{"):
            try:
                parsed = self.json()
            except ValueError:
                return {}
            return {key: str(value) for key, value in parsed.items()} if isinstance(parsed, dict) else {}
        pairs = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0] for key, values in pairs.items()}

    def bearer_token(self) -> str | None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/html; charset=utf-8") -> Response:
        return cls(status, text.encode("utf-8"), {"Content-Type": content_type})


class ApiError(Exception):
    """An error answer of the REST API: HTTP status plus one item of the envelope's `errors`."""

    def __init__(self, status: int, code: str, message: str, instance: str = "unknown", **headers: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.instance = instance
        self.headers = {key.replace("_", "-"): value for key, value in headers.items()}

    def item(self) -> dict[str, str]:
        return {"errorCode": self.code, "message": self.message, "instance": self.instance}


def envelope(data: Any, errors: list[dict[str, str]] | None = None) -> tuple[dict[str, Any], str]:
    """Shoptet's response envelope and its request id (also sent as `X-Request-ID`)."""
    request_id = str(uuid.uuid4())
    return {"data": data, "errors": errors, "metadata": {"requestId": request_id}}, request_id


def oauth_error(status: int, error: str, description: str) -> Response:
    return Response.json(status, {"error": error, "error_description": description})
