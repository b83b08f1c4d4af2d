"""Error pages: a shopper sees one plain sentence and a way back, never a traceback."""

from __future__ import annotations

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", title=title, message=message), status


def _http_error(exc: HTTPException) -> tuple[str, int]:
    code = exc.code or 500
    message = exc.description if code < 500 else "Something went wrong on our side."
    return error_page(code, exc.name, message or exc.name)


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
