"""The uplink reads at most so much of any cloud answer (gateway/uplink/transport.py, issue 10).

A fake cloud on loopback (a bare WSGI app under cheroot, as tests/unit/test_uplink.py serves
the real one) sends answers past the limits: declared in Content-Length, streamed without
one, and small on the wire but inflating past the cap (gzip). Each is refused with an error
in the log, and nothing of it is applied: the venue config file keeps the version it had.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.uplink.commands import COMMANDS_LIMIT
from gateway.uplink.start import uplink_for
from gateway.uplink.sync import CONFIG_LIMIT, Uplink
from gateway.uplink.transport import ANSWER_LIMIT, Refused
from plaza import signing
from tests.loopback_cloud import Cloud

GOOD = {"version": 1, "config": {"branding": {"name": "Harbour Café"}}}


class FakeCloud:
    """Answers each path with what `answers[path]` returns: (status, headers, body chunks)."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[], tuple[int, list, Iterator[bytes]]]] = {}
        self.served: list[str] = []

    def __call__(self, environ: dict, start_response: Callable) -> Iterator[bytes]:
        path = environ["PATH_INFO"]
        self.served.append(path)
        status, headers, body = self.answers.get(path, lambda: (404, [], iter([b"{}"])))()
        start_response(f"{status} X", [("Content-Type", "application/json"), *headers])
        return body


def json_answer(document: Any) -> Callable[[], tuple[int, list, Iterator[bytes]]]:
    data = json.dumps(document, separators=(",", ":")).encode()
    return lambda: (200, [("Content-Length", str(len(data)))], iter([data]))


def declared(size: int) -> Callable[[], tuple[int, list, Iterator[bytes]]]:
    return lambda: (200, [("Content-Length", str(size))], iter([b" " * size]))


def streamed(size: int) -> Callable[[], tuple[int, list, Iterator[bytes]]]:
    """No Content-Length: chunked, and the whole of it is sent unless the reader hangs up."""
    chunk = b'{"pad":"' + b"x" * (64 << 10)

    def body() -> Iterator[bytes]:
        for _ in range(size // len(chunk) + 1):
            yield chunk

    return lambda: (200, [], body())


def gzip_bomb(size: int) -> Callable[[], tuple[int, list, Iterator[bytes]]]:
    """A few kB on the wire that inflate to `size` bytes of JSON."""
    data = gzip.compress(b'{"version":2,"config":{"pad":"' + b"x" * size + b'"}}')
    headers = [("Content-Encoding", "gzip"), ("Content-Length", str(len(data)))]
    return lambda: (200, headers, iter([data]))


@pytest.fixture
def fake() -> Iterator[tuple[FakeCloud, Cloud]]:
    app = FakeCloud()
    server = Cloud(app, 0)
    server.start()
    yield app, server
    server.stop()


@pytest.fixture
def up(fake: tuple[FakeCloud, Cloud], tmp_path: Path) -> Uplink:
    """An uplink enrolled (by hand) with the fake cloud."""
    _, server = fake
    (tmp_path / "device.key").write_bytes(signing.private_pem(signing.new_key()))
    identity = {"device_id": "dev_01", "venue_id": "ven_01", "cloud_url": server.url,
                "cloud_public_key": signing.public_b64(signing.new_key())}  # fmt: skip
    (tmp_path / "cloud.json").write_text(json.dumps(identity))
    return uplink_for(tmp_path, rng=lambda: 0.0)


CONFIG = "/api/v1/device/config"


@pytest.mark.parametrize(
    "answer",
    [
        declared(CONFIG_LIMIT + 1),
        streamed(4 * CONFIG_LIMIT),
        gzip_bomb(4 * CONFIG_LIMIT),
    ],
    ids=["content-length", "chunked", "gzip"],
)
def test_an_oversized_config_is_refused_logged_and_not_applied(
    fake: tuple[FakeCloud, Cloud], up: Uplink, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = fake
    app.answers[CONFIG] = json_answer(GOOD)
    assert up.pull_config() is True and up.config_version == 1
    before = (up.state_dir / "cloud-config.json").read_bytes()
    app.answers[CONFIG] = answer
    caplog.set_level(logging.ERROR, "plaza.uplink")
    with pytest.raises(Refused, match="larger than 1048576 bytes"):
        up.pull_config()
    assert (up.state_dir / "cloud-config.json").read_bytes() == before  # nothing applied
    assert up.config_version == 1
    assert any("refused" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    # The uplink is not stuck: the next good answer is taken.
    app.answers[CONFIG] = json_answer({**GOOD, "version": 3})
    assert up.pull_config() is True and up.config_version == 3


def test_a_config_at_the_limit_is_taken(fake: tuple[FakeCloud, Cloud], up: Uplink) -> None:
    app, _ = fake
    pad = "x" * (CONFIG_LIMIT - 200)
    app.answers[CONFIG] = json_answer({"version": 1, "config": {"pad": pad}})
    assert up.pull_config() is True
    saved = json.loads((up.state_dir / "cloud-config.json").read_text())
    assert saved["config"]["pad"] == pad


def test_a_config_that_would_not_fit_its_file_is_not_written(
    fake: tuple[FakeCloud, Cloud], up: Uplink
) -> None:
    """Under the answer limit on the wire, over it as the file (indented): the readers would
    refuse the file, so it is not written."""
    app, _ = fake
    many = {f"k{i}": [1] for i in range(CONFIG_LIMIT // 14)}  # ~0.8 MiB on the wire
    app.answers[CONFIG] = json_answer({"version": 1, "config": many})
    with pytest.raises(Refused, match="config of more than"):
        up.pull_config()
    assert not (up.state_dir / "cloud-config.json").exists()


def test_other_answers_have_a_smaller_limit(fake: tuple[FakeCloud, Cloud], up: Uplink) -> None:
    app, _ = fake
    app.answers["/api/v1/device/heartbeat"] = streamed(ANSWER_LIMIT * 2)
    with pytest.raises(Refused, match=f"larger than {ANSWER_LIMIT} bytes"):
        up.heartbeat()
    assert up.stats["heartbeats_failed"] == 1 and up.stats["last_heartbeat_at"] == 0
    executed: list[dict] = []
    up.commands.execute = lambda request: executed.append(request) or {"ok": True}  # type: ignore[assignment]
    app.answers["/api/v1/device/commands"] = streamed(COMMANDS_LIMIT * 2)
    with pytest.raises(Refused, match=f"larger than {COMMANDS_LIMIT} bytes"):
        up.commands.poll(wait=0)
    assert executed == []


def test_an_answer_nested_past_the_recursion_limit_is_refused(
    fake: tuple[FakeCloud, Cloud], up: Uplink
) -> None:
    app, _ = fake
    deep = b'{"version":1,"config":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    app.answers[CONFIG] = lambda: (200, [("Content-Length", str(len(deep)))], iter([deep]))
    with pytest.raises(Refused, match="not understood"):
        up.pull_config()
    assert not (up.state_dir / "cloud-config.json").exists()
