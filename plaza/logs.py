"""Logging for the daemon and the portal: one line per event, secrets masked, floods damped.

Why one line per event: on the router the log goes to journald or procd's logd (syslog), where
a multi-line traceback becomes many unrelated entries and a `grep` loses the context. Every
record is therefore rendered as logfmt (`level=info logger=plaza.gateway msg="..." mac=...`) or
as one JSON object, with newlines escaped. Timestamps are left out when stderr is journald
(`JOURNAL_STREAM` names our stderr), and can be turned off for procd/syslog, which stamp each
line themselves.

Why a secret filter: login code paths handle OAuth codes, access tokens and wallet signatures;
one careless `log.warning("callback %s", request.url)` would put a live code in a log that
is shipped off the router. The filter masks values of secret-looking keys in extra fields and
`key=value` / `"key": "value"` pairs inside messages and tracebacks, before any handler writes.

Why a rate limiter: many events are driven by clients (malformed packets, scanners, a MAC
flood). Logging each would let one shopper fill the router's flash; `RateLimitedLog` logs the
first of a kind, then at most one line per interval with a count of what it held back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, TextIO

FORMATS = ("logfmt", "json")
MASK = "***"

# Records per level since start (all loggers); gateway/ops/metrics.py exports them, so an alert
# on a rising error rate needs no log scraping.
LEVEL_COUNTS: Counter[str] = Counter()

# -- secrets -------------------------------------------------------------------------------
# A key is secret if it is one of these words, or ends with one of the suffixes (so
# `access_token`, `client_secret`, `code_verifier` are secret but `status_code` is not).
_EXACT = ("code", "sign", "key", "cookie", "set-cookie", "authorization", "auth")
_SUFFIX = (
    "token", "secret", "password", "passwd", "signature", "verifier", "auth_code",
    "api_key", "apikey", "private_key", "session_key",
)  # fmt: skip
_KEY = (
    r"(?:[\w.-]*?(?:" + "|".join(map(re.escape, _SUFFIX)) + r")"
    r"|" + "|".join(map(re.escape, _EXACT)) + r")"
)
_SECRET_KEY_RE = re.compile(_KEY, re.IGNORECASE)
# `key=value`, `key: value`, `"key": "value"`, `'key': 'value'`, `?key=value&...`
_PAIR_RE = re.compile(
    r"(?<![\w.-])(?P<key>" + _KEY + r")(?P<sep>[\"']?\s*[=:]\s*)"
    r"(?P<val>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s&;,\"')\]}]+)",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"\b(?P<scheme>bearer|basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """Whether a field of this name must never be logged in clear."""
    return _SECRET_KEY_RE.fullmatch(key.strip()) is not None


def _mask_pair(match: re.Match[str]) -> str:
    val = match["val"]
    quote = val[0] if val[0] in "\"'" else ""
    return f"{match['key']}{match['sep']}{quote}{MASK}{quote}"


def mask_text(text: str) -> str:
    """Mask credentials written inside free text (messages, URLs, exception strings)."""
    if not text:
        return text
    text = _BEARER_RE.sub(lambda m: f"{m['scheme']} {MASK}", text)
    return _PAIR_RE.sub(_mask_pair, text)


def mask_value(key: str, value: Any) -> Any:
    """The loggable form of one extra field: masked entirely, or searched for secrets inside."""
    if is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value("", v) for v in value]
    return value


_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller added with `extra=` (everything that is not a LogRecord attribute)."""
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and k[:1] != "_"}


class SecretFilter(logging.Filter):
    """Renders the message once, masks it, the extras and the traceback; never drops a record.

    Attached to the handler (not a logger) so that records propagated from every module pass
    through it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments must not lose the event
            message = f"{record.msg} (unformattable arguments)"
        record.msg, record.args = mask_text(str(message)), None
        for key, value in extras(record).items():
            record.__dict__[key] = mask_value(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        LEVEL_COUNTS[record.levelname.lower()] += 1
        return True


# -- one line per event ----------------------------------------------------------------------
_BARE_RE = re.compile(r'^[^\s"=\\]+$')
_KEY_BAD_RE = re.compile(r"[^\w.-]")


def logfmt_value(value: Any) -> str:
    """A value quoted only when it must be; newlines escaped so an event stays one line."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    if _BARE_RE.match(text):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _timestamp(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


def _fields(record: logging.LogRecord, timestamps: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if timestamps:
        out["ts"] = _timestamp(record.created)
    out["level"] = record.levelname.lower()
    out["logger"] = record.name
    out["msg"] = record.getMessage()
    for key, value in extras(record).items():
        key = _KEY_BAD_RE.sub("_", key)
        out[key if key not in out else f"{key}_"] = value
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        out["exc"] = record.exc_text
    if record.stack_info:
        out["stack"] = record.stack_info
    return out


class LogfmtFormatter(logging.Formatter):
    """`ts=... level=info logger=plaza.gateway msg="..." key=value`; ts only when asked."""

    def __init__(self, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record, self.timestamps)
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, the same keys as logfmt."""

    def __init__(self, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record, self.timestamps)
        return json.dumps(fields, default=str, ensure_ascii=False, separators=(",", ":"))


def stderr_is_journal(
    environ: Mapping[str, str] = os.environ, stream: TextIO | None = None
) -> bool:
    """Whether our stderr is connected to journald (which stamps entries itself).

    systemd sets JOURNAL_STREAM=<device>:<inode> of the stream it connected; a child whose
    stderr was redirected elsewhere inherits the variable, so the inode is compared too.
    """
    value = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def configure(
    level: str | int = "info",
    fmt: str = "logfmt",
    timestamps: bool | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every logger to one stderr handler; replaces what was configured before.

    `timestamps=None` means: on, unless stderr is journald.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    stream = stream or sys.stderr
    if timestamps is None:
        timestamps = not stderr_is_journal(stream=stream)
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter if fmt == "json" else LogfmtFormatter
    handler.setFormatter(formatter(timestamps=timestamps))
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)
    return handler


def add_arguments(parser: Any) -> None:
    """The logging flags shared by `plaza-gateway run` and `plaza-portal run`."""
    import argparse

    parser.add_argument(
        "--log-format", choices=FORMATS, default="logfmt", help="one line per event (logfmt)"
    )
    parser.add_argument(
        "--log-timestamps",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stamp each line (default: yes, unless stderr is journald)",
    )


# -- logged once, not per packet -------------------------------------------------------------
class RateLimitedLog:
    """One line per kind of event, then at most one per `interval` with a count.

    For events a client can cause at packet rate. `kind` groups what is rate-limited together
    (a refusal reason, "mac-flood", ...); keep it from a small set: at most `max_kinds` are
    remembered (the oldest is forgotten first), so a kind per MAC cannot grow without bound.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.INFO,
        max_kinds: int = 256,
    ) -> None:
        self.logger, self.interval, self.clock, self.level = logger, interval, clock, level
        self.max_kinds = max_kinds
        self._last: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()
        self.suppressed = 0  # lines held back since start, all kinds

    def note(
        self, kind: str, message: str, *args: object, level: int | None = None, **fields: Any
    ) -> bool:
        """Log this event unless one of its kind was logged less than `interval` ago."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._quiet[kind] += 1
            self.suppressed += 1
            return False
        if last is None and len(self._last) >= self.max_kinds:
            oldest = min(self._last, key=self._last.__getitem__)
            del self._last[oldest]
            self._quiet.pop(oldest, None)
        self._last.pop(kind, None)
        self._last[kind] = now
        more = self._quiet.pop(kind, 0)
        suffix = f" (+{more} more since the last report)" if more else ""
        extra = {"kind": kind, **({"suppressed": more} if more else {}), **fields}
        extra = {(k if k not in _RESERVED else f"{k}_"): v for k, v in extra.items()}
        self.logger.log(self.level if level is None else level, message + suffix, *args,
                        extra=extra)  # fmt: skip
        return True
