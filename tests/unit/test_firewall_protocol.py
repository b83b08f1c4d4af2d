"""The `Firewall` protocol (gateway/dataplane/firewall.py) is the whole contract: everything the
daemon and the gateway use on a firewall is declared there, and the kernel's class
(gateway/dataplane/kernel.py) and the test double (tests/fakes/firewall.py) both implement all
of it with the same signatures. So a new call can be neither probed with `hasattr` nor
forgotten in the fake; and the daemon's paths (generation check, worker-thread snapshots,
repair) run on the fake as they do on the kernel."""

from __future__ import annotations

import ast
import asyncio
import inspect

import pytest

from gateway.daemon import Daemon
from gateway.dataplane.firewall import Firewall, FirewallSnapshot
from gateway.dataplane.grants import SET4, Changes, KernelState, desired, diff
from gateway.dataplane.kernel import NftFirewall, Snapshot
from gateway.gateway import Gateway
from tests.conftest import ROOT
from tests.fakes.firewall import FakeFirewall, FakeSnapshot
from tests.unit.conftest import MakeGateway

# What the fake offers beyond the protocol, for tests to drive it: nothing else.
FAKE_HELPERS = {"flush", "traffic", "external"}
MAC = "02:50:4c:00:00:01"
IP = "198.19.0.100"


def members(protocol: type) -> set[str]:
    """The protocol's declared methods and attributes (dunder context methods included)."""
    declared = {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    declared |= {n for n in ("__enter__", "__exit__") if n in vars(protocol)}
    return declared | set(protocol.__annotations__)


def methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}


def parameters(function: object) -> list[tuple[str, object, object, object]]:
    """Names, kinds, defaults and annotations of the parameters (not the return type: each
    class returns its own snapshot class)."""
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]


def assigned_in_init(cls: type) -> set[str]:
    """Attributes `__init__` sets on self (NftFirewall cannot be built without a kernel)."""
    body = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(body, ast.ClassDef)
    init = next(n for n in body.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    return {
        target.attr
        for node in ast.walk(init)
        for target in getattr(node, "targets", [getattr(node, "target", None)])
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }


@pytest.mark.parametrize(
    ("protocol", "cls"),
    [
        (Firewall, NftFirewall),
        (Firewall, FakeFirewall),
        (FirewallSnapshot, Snapshot),
        (FirewallSnapshot, FakeSnapshot),
    ],
    ids=["kernel", "fake", "kernel-snapshot", "fake-snapshot"],
)
def test_both_firewalls_implement_the_whole_protocol(protocol: type, cls: type) -> None:
    for name in sorted(members(protocol) - set(protocol.__annotations__)):
        assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"
        assert parameters(getattr(cls, name)) == parameters(getattr(protocol, name)), (
            f"{cls.__name__}.{name} differs from {protocol.__name__}.{name}"
        )
    missing = set(protocol.__annotations__) - assigned_in_init(cls)
    assert not missing, f"{cls.__name__} does not set {missing}"


def test_the_kernel_offers_nothing_undeclared_and_the_fake_only_its_test_helpers() -> None:
    assert methods(NftFirewall) == members(Firewall) - set(Firewall.__annotations__)
    assert methods(FakeFirewall) - members(Firewall) == FAKE_HELPERS


def used_on_firewalls() -> dict[str, set[str]]:
    """Attributes production code uses on a firewall (`….firewall.X`, a local `firewall.X`)
    and on a snapshot (`snap.X` of `with ….snapshot() as snap`); the implementation itself
    (kernel.py, whose snapshot reaches into its own firewall) is not a user."""
    found: dict[str, set[str]] = {"firewall": set(), "snapshot": set()}
    for path in sorted((ROOT / "gateway").rglob("*.py")) + sorted((ROOT / "portal").rglob("*.py")):
        if path == ROOT / "gateway" / "dataplane" / "kernel.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        snaps = {
            item.optional_vars.id
            for node in ast.walk(tree)
            if isinstance(node, ast.With)
            for item in node.items
            if isinstance(item.optional_vars, ast.Name)
            and isinstance(item.context_expr, ast.Call)
            and isinstance(item.context_expr.func, ast.Attribute)
            and item.context_expr.func.attr == "snapshot"
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if (isinstance(owner, ast.Attribute) and owner.attr == "firewall") or (
                isinstance(owner, ast.Name) and owner.id == "firewall"
            ):
                found["firewall"].add(node.attr)
            elif isinstance(owner, ast.Name) and owner.id in snaps:
                found["snapshot"].add(node.attr)
    return found


def test_everything_the_daemon_and_gateway_call_on_a_firewall_is_declared() -> None:
    used = used_on_firewalls()
    assert {"apply", "change", "snapshot", "generation", "own_commit"} <= used["firewall"]
    assert used["firewall"] - members(Firewall) == set()
    assert {"read_readings", "install", "repair"} <= used["snapshot"]
    assert used["snapshot"] - members(FirewallSnapshot) == set()


def test_no_probing_of_firewall_capabilities() -> None:
    """`hasattr(firewall, ...)` / `getattr(….firewall, ...)` would hide a missing method."""
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr")
                and node.args
            ):
                text = ast.unparse(node.args[0])
                assert "firewall" not in text and "nft" not in text, f"{path}: {text}"


# -- the daemon's kernel paths, on the fake ----------------------------------------------------
def authorized(make_gateway: MakeGateway) -> tuple[Gateway, FakeFirewall, Daemon]:
    fw = FakeFirewall()
    gw = make_gateway(firewall=fw)
    assert gw.handle({"op": "lease", "action": "add", "mac": MAC, "ip": IP})["ok"]
    assert gw.handle({"op": "auth", "client": MAC})["ok"]
    return gw, fw, Daemon(gw.config, gw, lan_ifindex=None)


def runs(daemon: Daemon, task: str) -> float:
    return daemon.metrics.periodic_runs.values.get((task,), 0.0)


def test_the_reconciler_skips_when_only_this_process_committed(
    make_gateway: MakeGateway,
) -> None:
    gw, fw, daemon = authorized(make_gateway)
    asyncio.run(daemon.reconcile())  # the first one compares, finds nothing to repair
    assert runs(daemon, "reconcile") == 1
    gw.handle({"op": "deauth", "client": MAC})  # our own commit moves the generation
    fw.own_commit()  # and so does the guard's, counted as ours
    asyncio.run(daemon.reconcile())
    assert runs(daemon, "reconcile-skipped") == 1 and runs(daemon, "reconcile") == 1


def test_the_reconciler_repairs_what_someone_else_deleted(make_gateway: MakeGateway) -> None:
    gw, fw, daemon = authorized(make_gateway)
    asyncio.run(daemon.reconcile())
    element = next(e for e in fw.elements if e[0] == SET4)
    fw.external(Changes(del_elements=(element,)))
    assert (IP, MAC) not in fw.allowed()
    asyncio.run(daemon.reconcile())
    assert (IP, MAC) in fw.allowed() and runs(daemon, "reconcile-full") == 1
    assert gw.repairs > 0


def test_a_vanished_table_is_reloaded_by_the_full_reconcile(make_gateway: MakeGateway) -> None:
    _gw, fw, daemon = authorized(make_gateway)
    fw.flush()
    asyncio.run(daemon.reconcile())  # the worker's read fails: the gateway reloads it all
    assert fw.present() and fw.allowed() == {(IP, MAC)}
    assert fw.calls[-1][0] == "apply" and runs(daemon, "reconcile-full") == 1


def test_the_poll_reads_counters_through_a_snapshot(make_gateway: MakeGateway) -> None:
    gw, fw, daemon = authorized(make_gateway)
    fw.traffic(IP, MAC, up=300, down=5000)
    asyncio.run(daemon.poll())
    session = gw.table.clients[MAC].session_id
    assert session is not None
    total = gw.meters[session].total
    assert (total.bytes_up, total.bytes_down) == (300, 5000)
    assert runs(daemon, "poll") == 1


def test_readings_a_snapshot_installs_leave_out_sessions_redone_meanwhile(
    make_gateway: MakeGateway,
) -> None:
    gw, fw, _daemon = authorized(make_gateway)
    fw.traffic(IP, MAC, down=5000)
    grant = next(iter(gw.granted.values()))
    with fw.snapshot() as snap:
        snap.read_readings()  # 5000 bytes down, read in the worker
        assert snap.readings is not None and snap.readings[grant.session].usage.bytes_down == 5000
        fw.change(diff(desired([]), desired([grant])))  # gone
        fw.change(diff(desired([grant]), KernelState()))  # made anew
        snap.install()
        assert grant.session not in fw.readings()  # its read numbers predate its objects
        assert fw.readings()[grant.session].usage.bytes_down == 0  # the kernel's, read anew
