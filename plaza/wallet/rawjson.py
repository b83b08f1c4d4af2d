"""The exact text of each top-level member of a JSON object.

Alipay signs a response's `<method>_response` value as the bytes it sent, not a canonical
form, so the verifier must cut that value out of the body verbatim: re-serializing would change
spacing, escapes or key order and break every signature. Walking only the top level (with the
standard decoder to find where each value ends) means a nested key with the same name cannot
be mistaken for the signed one, and a duplicated top-level key is refused as ambiguous.
"""

from __future__ import annotations

import json

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


def raw_members(text: str) -> dict[str, str]:
    """{key: raw JSON text of its value} for the object `text`; ValueError if it is not one."""
    try:
        return _members(text)
    except IndexError:
        raise ValueError("truncated JSON object") from None
    except RecursionError:  # the decoder recurses per level: `[[[[...` from a hostile server
        raise ValueError("JSON nested too deeply") from None


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _members(text: str) -> dict[str, str]:
    members: dict[str, str] = {}
    i = _skip(text, 0)
    if text[i] != "{":
        raise ValueError("not a JSON object")
    i = _skip(text, i + 1)
    if text[i] == "}":
        i += 1
    else:
        while True:
            if text[i] != '"':
                raise ValueError("expected a member name")
            key, i = _DECODER.raw_decode(text, i)
            i = _skip(text, i)
            if text[i] != ":":
                raise ValueError("expected ':'")
            start = _skip(text, i + 1)
            _, end = _DECODER.raw_decode(text, start)
            if key in members:
                raise ValueError(f"duplicate member {key!r}")
            members[key] = text[start:end]
            i = _skip(text, end)
            if text[i] == ",":
                i = _skip(text, i + 1)
                continue
            if text[i] != "}":
                raise ValueError("expected ',' or '}'")
            i += 1
            break
    if _skip(text, i) != len(text):
        raise ValueError("text after the JSON object")
    return members
