"""What every JSON endpoint shares: one error shape, the app's clock, and body parsing.

Errors are always `{"error": "<one line>"}` (docs/cloud-protocol.md), also for what Flask
raises itself (404, 405, 413), so a router never has to parse an HTML error page.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    """Refuse a request with a status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now() -> float:
    """The app's clock (config CLOCK), so tests can move time instead of sleeping."""
    return float(current_app.config["CLOCK"]())


MAX_INT_DIGITS = 20  # every whole number of the protocol fits in 64 bits


def _whole(text: str) -> int:
    """JSON integers, bounded: `math.isfinite(10**400)` raises OverflowError in a validator."""
    if len(text) > MAX_INT_DIGITS:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def json_body(body: bytes | None = None) -> Any:
    """The request's JSON (from the bytes already read for the signature, if given)."""
    raw = request.get_data(cache=True) if body is None else body
    try:
        return json.loads(raw, parse_int=_whole)
    except RecursionError:  # the decoder recurses per level of `[[[[...`
        raise ApiError(400, "body is not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a number too long
        raise ApiError(400, f"body is not JSON: {exc}") from None


def json_object(body: bytes | None = None) -> dict[str, Any]:
    value = json_body(body)
    if not isinstance(value, dict):
        raise ApiError(400, "body must be a JSON object")
    return value


def _api_error(exc: ApiError) -> ResponseReturnValue:
    return jsonify(error=exc.message), exc.status


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    message = (exc.description or exc.name).splitlines()[0] if exc.description else exc.name
    return jsonify(error=message), exc.code or 500


def register(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
