"""The reconciler's comparison without a kernel: `compare.drift` reads netlink answers crafted
here with the module's own encoders, and must find what `grants.diff` finds; the daemon
thread then repairs only what it did not change itself meanwhile (`Snapshot.repair`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.dataplane import compare, messages, netlink
from gateway.dataplane.grants import Changes, Grant, KernelState, Start, desired, diff
from gateway.dataplane.journal import Journal
from gateway.dataplane.kernel import Snapshot
from gateway.dataplane.netlink import (
    ELEM_LIST_SET,
    MSG_GETOBJ,
    MSG_GETSETELEM,
    OBJ_TYPE,
    OBJ_TYPES,
    attrs,
    cstr,
)

A = Grant("aaaa000000000001", "02:00:00:00:00:01", ("198.19.0.11",))
B = Grant("bbbb000000000002", "02:00:00:00:00:02", ("198.19.0.12", "2001:db8:19::12"),
          quota_total=5_000_000, rate_up=125_000)  # fmt: skip
C = Grant("cccc000000000003", "02:00:00:00:00:03", ("198.19.0.13",), quota_down=1_000_000,
          rate_down=250_000)  # fmt: skip


class KernelAnswers:
    """Answers GETSETELEM and GETOBJ dumps from a KernelState, in nf_tables' own layout
    (the bodies of the add messages the gateway would send have the same attributes), a
    few elements per message as the kernel splits a dump."""

    def __init__(self, state: KernelState) -> None:
        self.state = state
        self.asked: list[str] = []

    def request(self, mtype: int, body: bytes, dump: bool = False, parse: Any = None,
                family: int = netlink.NFPROTO_INET) -> list[Any]:  # fmt: skip
        assert dump and parse is not None
        at = {k: (s, e) for k, s, e in attrs(body, 0, len(body))}
        bodies: list[bytes] = []
        if mtype == MSG_GETSETELEM:
            name = cstr(body, *at[ELEM_LIST_SET])
            self.asked.append(name)
            items = sorted((k, o) for n, k, o in self.state.elements if n == name)
            for i in range(0, len(items), 2):
                msgs = messages.elements_messages("add", name, items[i : i + 2])
                bodies += [m[2] for m in msgs]
        elif mtype == MSG_GETOBJ:
            kind = netlink.OBJ_KINDS[netlink.BE32.unpack_from(body, at[OBJ_TYPE][0])[0]]
            self.asked.append(kind)
            for key, spec in sorted(self.state.objects.items()):
                if key[0] == kind:
                    bodies.append(messages.object_message(key, spec, Start())[2])
        else:
            raise AssertionError(f"unexpected request {mtype}")
        found = [parse(bytearray(b), 0, len(b)) for b in bodies]
        return [f for f in found if f is not None]


def kernel(*grants: Grant) -> KernelState:
    return desired(grants)


def edit(state: KernelState, drop=(), add=(), objects=None, drop_objects=()) -> KernelState:
    elements = (state.elements - set(drop)) | set(add)
    objs = {k: v for k, v in state.objects.items() if k not in drop_objects}
    objs.update(objects or {})
    return KernelState(frozenset(elements), objs)


A_UP = "198.19.0.11 . 02:00:00:00:00:01"
D = Grant("dddd000000000004", "02:00:00:00:00:04", ("198.19.0.14",))
DRIFTS = {
    "equal": kernel(A, B, C),
    "a-client-missing": kernel(A, B),
    "a-stranger": kernel(A, B, C, D),
    "element-deleted": edit(kernel(A, B, C), drop=[("auth4", A_UP, None)]),
    "element-repointed": edit(
        kernel(A, B, C),
        drop=[("cnt_up4", A_UP, "up_aaaa000000000001")],
        add=[("cnt_up4", A_UP, "up_bbbb000000000002")],
    ),
    "quota-resized": edit(kernel(A, B, C), objects={("quota", "qtotal_bbbb000000000002"): (1,)}),
    "limit-changed": edit(kernel(A, B, C), objects={("limit", "rup_bbbb000000000002"): (9, 1)}),
    "object-deleted": edit(kernel(A, B, C), drop_objects=[("counter", "down_cccc000000000003")]),
    "empty-table": KernelState(),
}


@pytest.mark.parametrize("have", DRIFTS.values(), ids=DRIFTS.keys())
def test_drift_finds_what_diff_finds(have: KernelState) -> None:
    grants = [A, B, C]
    answers = KernelAnswers(have)
    found = compare.drift(answers, grants)  # type: ignore[arg-type]
    assert found == diff(desired(grants), have)
    assert set(answers.asked) == set(messages.CLIENT_SETS) | set(OBJ_TYPES)


def test_no_drift_is_no_change() -> None:
    assert not compare.drift(KernelAnswers(kernel(A, B, C)), [A, B, C])  # type: ignore[arg-type]


class Journaled:
    """What `Snapshot.repair` needs of the firewall: the changes committed meanwhile."""

    def __init__(self, since: list[Changes | None]) -> None:
        self.journal = Journal()
        self.mark = self.journal.open()
        for changes in since:
            self.journal.record(changes)


def snapshot(drift: Changes, since: list[Changes | None]) -> Snapshot:
    firewall = Journaled(since)
    snap = Snapshot(firewall)  # type: ignore[arg-type]
    snap.mark = firewall.mark
    snap.drift = drift
    return snap


def test_repair_leaves_out_what_the_daemon_changed_while_the_read_ran() -> None:
    # The kernel was read without C (deleted behind our back) while the daemon logged D in.
    d = Grant("dddd000000000004", "02:00:00:00:00:04", ("198.19.0.14",))
    drift = diff(desired([A, C, d]), kernel(A))
    login = diff(desired([d]), KernelState())
    repair = snapshot(drift, [login]).repair()
    assert repair == diff(desired([C]), KernelState())
    assert snapshot(drift, []).repair() == drift
    assert snapshot(drift, [login, None]).repair() is None  # the table was replaced meanwhile
    assert not snapshot(Changes(), [login]).repair()


def test_drift_of_a_closing_session_keeps_its_objects_only() -> None:
    closing = replace(B, addresses=())
    have = kernel(A, B)
    found = compare.drift(KernelAnswers(have), [A, closing])  # type: ignore[arg-type]
    assert not found.add_elements and not found.del_objects and not found.add_objects
    assert {e[0] for e in found.del_elements} >= {"auth4", "auth6", "cnt_up4", "cnt_down6"}
