"""The queue hook's feature detection and install commands, and how verdicts reach the kernel."""

from __future__ import annotations

import subprocess

import pytest

from gateway.dataplane import ruleset
from gateway.garden import queue as garden_queue
from gateway.garden.inspector import RateLimitedLog, Verdict, log
from gateway.garden.queue import QueueHook, apply_verdicts, native_queue_supported


class FakeRun:
    """Records commands; a command holding any word of `fail` exits 1."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.fail = fail

    def __call__(self, cmd: list[str], stdin: str | None = None):
        self.calls.append((cmd, stdin))
        rc = 1 if any(word in cmd for word in self.fail) else 0
        return subprocess.CompletedProcess(cmd, rc, "", "")


@pytest.fixture(autouse=True)
def binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    present = {"nft", "iptables-nft", "ip6tables-nft"}
    monkeypatch.setattr(garden_queue.shutil, "which", lambda n: n if n in present else None)


def test_native_queue_is_probed_with_nft_check() -> None:
    run = FakeRun()
    assert native_queue_supported(run)
    cmd, text = run.calls[0]
    assert cmd == ["nft", "--check", "-f", "-"]
    assert text is not None and "queue num 11 bypass" in text and "plaza_probe" in text
    assert not native_queue_supported(FakeRun(fail=("nft",)))


def test_native_hook_is_its_own_table() -> None:
    run = FakeRun()
    hook = QueueHook(run, native=True)
    hook.install()
    cmd, text = run.calls[-1]
    assert cmd == ["nft", "-f", "-"] and text is not None
    assert text.startswith("table inet plaza_queue\ndelete table inet plaza_queue\n")
    garden = "meta mark & 0x00100000 == 0x00100000 ct mark & 0x00600000 == 0x00000000"
    assert f"{garden} queue num 11 bypass" in text
    hook.remove()
    assert run.calls[-1][0] == ["nft", "delete", "table", "inet", "plaza_queue"]


def test_xt_hook_is_inserted_once_per_family() -> None:
    run = FakeRun(fail=("-C",))  # not there yet
    hook = QueueHook(run, native=False)
    hook.install()
    inserted = [cmd for cmd, _ in run.calls if "-I" in cmd]
    assert [cmd[0] for cmd in inserted] == ["iptables-nft"] * 2 + ["ip6tables-nft"] * 2
    rule = inserted[0][inserted[0].index("-I") :]
    # prerouting, not forward: no iptables-nft chain on a forwarded packet's forward hook
    assert rule[:3] == ["-I", "PREROUTING", "1"]
    assert " ".join(rule).endswith(
        "-m mark --mark 0x100000/0x100000 -m connmark --mark 0x0/0x600000 "
        "-m comment --comment plaza-garden -j NFQUEUE --queue-num 11 --queue-bypass"
    )
    detect = inserted[1][inserted[1].index("-I") :]
    assert detect[:3] == ["-I", "PREROUTING", "1"]
    assert " ".join(detect).endswith(
        "-m mark --mark 0x800000/0x900000 -m comment --comment plaza-detect "
        "-j NFQUEUE --queue-num 12 --queue-bypass"
    )
    present = FakeRun()  # -C succeeds: nothing is added twice
    QueueHook(present, native=False).install()
    assert not any("-I" in cmd for cmd, _ in present.calls)


def test_xt_hook_install_takes_an_older_release_rules_out() -> None:
    """An older release's garden rule on mangle FORWARD would queue a packet twice, and its
    empty chain would still cost every forwarded packet: both go at install."""
    run = FakeRun(fail=("-C",))
    QueueHook(run, native=False).install()
    for binary in ("iptables-nft", "ip6tables-nft"):
        mine = [c for c, _ in run.calls if c[0] == binary]
        deleted = [c[c.index("-D") + 1 :] for c in mine if "-D" in c]
        assert (deleted[0][:7]) == [
            "FORWARD",
            "-p",
            "tcp",
            "-m",
            "mark",
            "--mark",
            "0x100000/0x100000",
        ]
        assert any(d[:4] == ["PREROUTING", "-m", "mark", "--mark"] and
                   d[4] == "0x800000/0x800000" for d in deleted)  # fmt: skip
        x = next(i for i, c in enumerate(mine) if "-X" in c)
        assert mine[x][-2:] == ["-X", "FORWARD"]
        assert x < next(i for i, c in enumerate(mine) if "-I" in c)
    quiet = FakeRun(fail=("-C", "-D"))  # nothing old there: the chain is left alone
    QueueHook(quiet, native=False).install()
    assert not any("-X" in c for c, _ in quiet.calls)


def test_xt_hook_install_failure_is_reported() -> None:
    with pytest.raises(RuntimeError, match="refused the NFQUEUE rule"):
        QueueHook(FakeRun(fail=("-C", "-I")), native=False).install()


def test_remove_deletes_until_gone() -> None:
    class Twice(FakeRun):
        def __call__(self, cmd, stdin=None):
            super().__call__(cmd, stdin)
            deletes = sum(1 for c, _ in self.calls if c[0] == cmd[0] and "-D" in c)
            return subprocess.CompletedProcess(cmd, 0 if deletes <= 2 else 1, "", "")

    run = Twice()
    QueueHook(run, native=False).remove()
    # per family: the garden rule 2 + a failing 3rd, the detect rule a failing 1st
    assert sum(1 for c, _ in run.calls if "-D" in c) == 8


class FakePacket:
    def __init__(self, mark: int = 0) -> None:
        self.mark = mark
        self.verdict = ""

    def get_mark(self) -> int:
        return self.mark

    def set_mark(self, mark: int) -> None:
        self.mark = mark

    def accept(self) -> None:
        self.verdict = "accept"

    def drop(self) -> None:
        self.verdict = "drop"


def test_verdicts_ride_on_the_mark() -> None:
    other = 0x0000_3F00  # someone else's bits (mwan3, SQM) stay as they were
    q = ruleset.MARK_QUEUE | other
    allow, refuse, bare, dup = FakePacket(q), FakePacket(q), FakePacket(q), FakePacket(q)
    apply_verdicts(
        [(allow, Verdict.ALLOW), (refuse, Verdict.REFUSE), (bare, Verdict.PASS),
         (dup, Verdict.DROP)],
        RateLimitedLog(log),
    )  # fmt: skip
    assert (allow.verdict, allow.mark) == ("accept", q | ruleset.MARK_ALLOW)
    assert (refuse.verdict, refuse.mark) == ("accept", q)  # lan_forward resets it
    assert (bare.verdict, bare.mark) == ("accept", other)  # treated as not queued
    assert dup.verdict == "drop"


def test_a_failing_verdict_does_not_stop_the_others() -> None:
    class Broken(FakePacket):
        def accept(self) -> None:
            raise RuntimeError("Parent queue has already been unbound")

    ok = FakePacket()
    apply_verdicts([(Broken(), Verdict.REFUSE), (ok, Verdict.REFUSE)], RateLimitedLog(log))
    assert ok.verdict == "accept"
