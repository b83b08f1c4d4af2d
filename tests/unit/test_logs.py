"""plaza/logs.py: one line per event, secrets masked, the rate limiter on an injected clock."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from plaza import logs
from plaza.logs import (
    LogfmtFormatter,
    RateLimitedLog,
    SecretFilter,
    is_secret_key,
    mask_text,
    stderr_is_journal,
)


@pytest.fixture
def root_restored() -> Iterator[None]:
    """`configure` owns the root logger; give it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def emit(fmt: str = "logfmt", timestamps: bool = False) -> tuple[logging.Logger, io.StringIO]:
    """A logger writing through the real handler stack into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    formatter = logs.JsonFormatter if fmt == "json" else LogfmtFormatter
    handler.setFormatter(formatter(timestamps=timestamps))
    handler.addFilter(SecretFilter())
    logger = logging.getLogger(f"plaza.test.{fmt}.{timestamps}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


# -- secrets -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    ["token", "code", "secret", "password", "sign", "auth_code", "access_token",
     "refresh_token", "id_token", "client_secret", "code_verifier", "Authorization", "cookie",
     "app_auth_code", "ACCESS_TOKEN", "api_key"],
)  # fmt: skip
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["mac", "ip", "status_code", "tokens", "token_count", "signal", "codec", "state"]
)
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("callback /cb?code=AbC123&state=xyz", "callback /cb?code=***&state=xyz"),
        ("access_token=ya29.a0 expires_in=3600", "access_token=*** expires_in=3600"),
        ('{"token": "s3cr3t", "ok": true}', '{"token": "***", "ok": true}'),
        ("{'password': 'hunter2'}", "{'password': '***'}"),
        ("client_secret: abc def", "client_secret: *** def"),
        ('sign="a b==" charset=utf-8', 'sign="***" charset=utf-8'),
        ("app_id=2021 auth_code=xyz", "app_id=2021 auth_code=***"),
        ("HTTP 500 status_code=500 tokens=3", "HTTP 500 status_code=500 tokens=3"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_mask_text(text: str, want: str) -> None:
    assert mask_text(text) == want


def test_bearer_credentials_are_masked() -> None:
    masked = mask_text("Authorization: Bearer eyJhbGciOi.payload.sig")
    assert "eyJhbGciOi" not in masked and "payload" not in masked


def test_no_secret_reaches_the_log_from_args_extras_or_tracebacks() -> None:
    logger, out = emit()
    logger.info(
        "wallet callback %s",
        "https://portal.test/cb?code=SECRET1&state=ok",
        extra={"token": "SECRET2", "mac": "02:50:4c:00:00:01", "url": "/x?access_token=SECRET3",
               "params": {"sign": "SECRET4", "app_id": "2021"}},
    )  # fmt: skip
    try:
        raise ValueError("refused password=SECRET5")
    except ValueError:
        logger.exception("login failed")
    text = out.getvalue()
    for n in range(1, 6):
        assert f"SECRET{n}" not in text
    assert "state=ok" in text and "mac=02:50:4c:00:00:01" in text and "2021" in text
    assert len(text.splitlines()) == 2  # the traceback stays on its event's line


# -- one line per event ----------------------------------------------------------------------
def test_logfmt_line_has_level_logger_msg_and_extras_quoted_when_needed() -> None:
    logger, out = emit()
    logger.warning("reconciler: added %d,\nremoved %d", 2, 1, extra={"n": 3, "who": "a b"})
    line = out.getvalue()
    msg = 'msg="reconciler: added 2,\\nremoved 1"'
    assert line == f'level=warning logger={logger.name} {msg} n=3 who="a b"\n'


def test_logfmt_timestamps_on_request() -> None:
    logger, out = emit(timestamps=True)
    logger.info("hello")
    first = out.getvalue().split(" ", 1)[0]
    assert first.startswith("ts=") and first.endswith("Z") and "T" in first


def test_json_lines() -> None:
    logger, out = emit("json")
    logger.error("failed %s", "x", extra={"mac": "m", "code": "SECRET"})
    record = json.loads(out.getvalue())
    assert record == {"level": "error", "logger": logger.name, "msg": "failed x",
                      "mac": "m", "code": "***"}  # fmt: skip


def test_bad_arguments_do_not_lose_the_event() -> None:
    logger, out = emit()
    logger.info("%d clients", "many")
    assert "unformattable" in out.getvalue()


def test_configure_routes_every_logger_and_refuses_unknown_formats(root_restored: None) -> None:
    out = io.StringIO()
    logs.configure("debug", "logfmt", timestamps=False, stream=out)
    logging.getLogger("plaza.gateway").debug("authorized %s", "x", extra={"token": "t"})
    assert out.getvalue() == 'level=debug logger=plaza.gateway msg="authorized x" token=***\n'
    with pytest.raises(ValueError, match="log format"):
        logs.configure("info", "xml", stream=out)


def test_journald_stderr_is_detected_by_device_and_inode(tmp_path) -> None:
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream)
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stream)
        assert not stderr_is_journal({}, stream)


def test_no_timestamps_when_stderr_is_journald(
    tmp_path, monkeypatch: pytest.MonkeyPatch, root_restored: None
) -> None:
    with open(tmp_path / "journal", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.configure("info", stream=stream)
        logging.getLogger("plaza.x").info("hi")
    assert (tmp_path / "journal").read_text() == "level=info logger=plaza.x msg=hi\n"


# -- logged once, not per packet -------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_logs_once_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = RateLimitedLog(logging.getLogger("plaza.test.rl"), interval=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="plaza.test.rl"):
        assert limiter.note("mac-flood", "MAC flood on %s", "lan1")
        for _ in range(99):
            assert not limiter.note("mac-flood", "MAC flood on %s", "lan1")
        assert limiter.note("malformed", "malformed packet")  # another kind: its own budget
        clock.now += 59.9
        assert not limiter.note("mac-flood", "MAC flood on %s", "lan1")
        clock.now += 0.2
        assert limiter.note("mac-flood", "MAC flood on %s", "lan1", port="lan1")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "MAC flood on lan1",
        "malformed packet",
        "MAC flood on lan1 (+100 more since the last report)",
    ]
    last = caplog.records[-1]
    assert (last.kind, last.suppressed, last.port) == ("mac-flood", 100, "lan1")  # type: ignore[attr-defined]
    assert limiter.suppressed == 100


def test_rate_limiter_level_and_bounded_kinds(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = RateLimitedLog(
        logging.getLogger("plaza.test.rl2"), clock=clock, level=logging.WARNING, max_kinds=3
    )
    with caplog.at_level(logging.DEBUG, logger="plaza.test.rl2"):
        for n in range(10):
            clock.now += 1
            limiter.note(f"kind{n}", "event %d", n, name="clash")  # `name` is a LogRecord field
    assert len(limiter._last) == 3
    assert {r.levelno for r in caplog.records} == {logging.WARNING}
    assert caplog.records[0].name_ == "clash"  # type: ignore[attr-defined]
