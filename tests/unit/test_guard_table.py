"""The LAN guard table's loading: kept when this version is there, loaded by `nft -f`
otherwise (gateway/dataplane/guard.py). The kernel side is in tests/netns/test_guard.py."""

from __future__ import annotations

import pytest

from gateway.dataplane import guard
from gateway.dataplane.firewall import NftError
from gateway.dataplane.netlink import NFPROTO_BRIDGE


class FakeNetlink:
    def __init__(self, comment: str | None, present: bool = True) -> None:
        self.comment, self.present = comment, present
        self.asked: list[tuple[str, int]] = []

    def table_comment(self, table: str, family: int) -> str | None:
        self.asked.append((table, family))
        if not self.present:
            raise NftError("No such file or directory")
        return self.comment


def test_the_table_carries_a_fingerprint_of_its_rules() -> None:
    text = guard.render()
    assert f'comment "{guard.COMMENT}"' in text
    assert guard.COMMENT.startswith("plaza-guard ") and len(guard.COMMENT) == 24
    assert 'counter name "rogue_dhcp" drop' in text


@pytest.mark.parametrize(
    ("netlink", "loaded"),
    [
        (FakeNetlink(guard.COMMENT), False),  # a daemon restart: kept, counters and all
        (FakeNetlink("plaza-guard 000000000000"), True),  # an older version: replaced
        (FakeNetlink(None), True),  # someone else's table of that name
        (FakeNetlink(None, present=False), True),  # none yet
    ],
)
def test_start_loads_only_what_is_not_there(netlink: FakeNetlink, loaded: bool) -> None:
    scripts: list[str] = []
    commits: list[int] = []
    g = guard.Guard(run=scripts.append, nl=netlink, committed=lambda: commits.append(1))
    assert g.start() is loaded
    assert netlink.asked == [(guard.TABLE, NFPROTO_BRIDGE)]
    assert len(scripts) == len(commits) == (1 if loaded else 0)
    if loaded:  # one atomic batch: make sure it exists, drop it, load this version
        assert scripts[0].startswith("table bridge plaza_guard\ndelete table bridge plaza_guard\n")
        assert scripts[0].endswith(guard.render())


def test_a_failing_load_is_an_nft_error_and_no_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    class Done:
        returncode, stderr = 1, "Error: Could not process rule: Operation not permitted\n"

    monkeypatch.setattr(guard.subprocess, "run", lambda *a, **k: Done())
    commits: list[int] = []
    g = guard.Guard(nl=FakeNetlink(None, present=False), committed=lambda: commits.append(1))
    with pytest.raises(NftError, match="Operation not permitted"):
        g.start()
    assert commits == []
