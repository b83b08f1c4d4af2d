"""Issue 13's image-baked enrolment through the router image under QEMU, one boot: the merchant
makes a fleet secret in the dashboard, an image is built with it (`FLEET_SECRET`, `VENUE_TAG`,
`FLEET_CLOUD`, `FLEET_CA`: only the router layer is redone, the Debian base is the cached one),
the router boots, its first-boot unit asks to join and waits while the gateway runs in its local
mode; the merchant approves it in the dashboard; the router takes its identity, drops the
secret, restarts the gateway, and the cloud sees it heartbeat with its config.

Real here: the image's systemd (plaza-fleet-enrol.service as packaged), the lab cloud over
HTTPS on the VM's internet (lab/vm_internet.py) and its merchant dashboard, driven over HTTP
as a browser would (sign-in, CSRF tokens), never through its database.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab import cloud as labcloud
from lab.vm import KEY, RouterVM
from tests.vm.flow import journal

pytestmark = [pytest.mark.vm, pytest.mark.netns]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
UNIT = "plaza-fleet-enrol"
ASK = 300  # seconds from SSH up to the router in the merchant's list (TCG, 2 loaded cores)
JOIN = 420  # seconds from approval to a heartbeat with the config (asks back off to 40 s)

# The merchant in a browser, run in the internet namespace (where cloud.test resolves and
# routes): sign in, open Routers waiting, then one action; JSON on stdout.
MERCHANT = r"""
import json, re, sys
import requests
base, ca, email, password, action, *rest = sys.argv[1:]
s = requests.Session()
s.verify, s.trust_env = ca, False  # REQUESTS_CA_BUNDLE in the environment would win over verify
def token(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
login = s.get(base + "/dashboard/login")
s.post(base + "/dashboard/login",
       data={"email": email, "password": password, "csrf_token": token(login.text)})
page = s.get(base + "/dashboard/fleet")
assert page.status_code == 200 and "Routers waiting" in page.text, (page.url, page.text[:300])
if action == "secret":
    made = s.post(base + "/dashboard/fleet/secret", data={"csrf_token": token(page.text)})
    print(json.dumps({"secret": re.search(r'id="fleet-secret">([^<]+)<', made.text).group(1)}))
elif action == "waiting":
    body = page.text.split("<tbody>")[1].split("</tbody>")[0] if "<tbody>" in page.text else ""
    rows = []
    for row in body.split("<tr>")[1:]:
        cells = [re.sub(r"<[^>]+>", " ", c).split() for c in row.split("<td>")[1:3]]
        pending = re.search(r"/dashboard/fleet/([^/]+)/approve", row).group(1)
        rows.append({"id": pending, "router": cells[0], "tag": " ".join(cells[1])})
    print(json.dumps(rows))
elif action == "approve":
    done = s.post(base + f"/dashboard/fleet/{rest[0]}/approve",
                  data={"csrf_token": token(page.text), "venue_id": rest[1]})
    print(json.dumps({"status": done.status_code,
                      "device": re.search(r"joins as (\S+) at", done.text).group(1)}))
elif action == "venue":
    page = s.get(base + f"/dashboard/venues/{rest[0]}")
    row = re.search(r'<tr id="device-%s">(.*?)</tr>' % rest[1], page.text, re.S)
    print(json.dumps({"row": re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1)))
                      if row else ""}))
"""


def merchant(vm: RouterVM, action: str, *args: str) -> Any:
    assert vm.internet is not None
    done = subprocess.run(
        ["ip", "netns", "exec", vm.internet_ns, sys.executable, "-c", MERCHANT,
         labcloud.CLOUD_URL, str(vm.internet.ca.cert_path), labcloud.MERCHANT_EMAIL,
         labcloud.MERCHANT_PASSWORD, action, *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"merchant {action}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


class FleetRouterVM(RouterVM):
    """The lab VM whose image is built between the wiring and the boot: the fleet secret is
    made by the merchant in the dashboard of the cloud that only runs once the internet is up
    (`_wire`), as a merchant makes one before the images are flashed."""

    fleet_out: Path
    build_seconds = 0.0

    def _wire(self) -> None:
        super()._wire()
        assert self.internet is not None and self.internet.account is not None
        secret = merchant(self, "secret")["secret"]
        out = self.fleet_out  # on disk: /run (self.dir) may be a small tmpfs
        env = {
            **os.environ,
            "FLEET_SECRET": secret,
            "VENUE_TAG": self.internet.account.venue_id,
            "FLEET_CLOUD": labcloud.CLOUD_URL,
            "FLEET_CA": str(self.internet.ca.cert_path),
        }
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "provisioning/image/build.py", "--out", str(out),
             "--deb", str(ROOT / "dist" / "plaza_0.1.0_amd64.deb"),
             "--ssh-key", str(KEY.with_suffix(".pub"))],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        # A new secret: the router and disk layers redone, the Debian base the cached one.
        layers = re.search(r"\(base (\d+) s, router (\d+) s, disk (\d+) s\)", done.stdout)
        assert layers is not None and int(layers.group(1)) <= 5, done.stdout
        self.build_seconds = time.monotonic() - start
        self.image = out / "plaza-router.qcow2"  # what up() boots next


@pytest.fixture(scope="module")
def fleet_vm(
    router_image: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetRouterVM]:
    machine = FleetRouterVM(name=f"pfl{os.getpid() % 10000}", image=router_image, services=True)
    machine.fleet_out = tmp_path_factory.mktemp("fleet-image")
    try:
        machine.up()
        print(f"\nfleet image (router and disk layers): {machine.build_seconds:.0f} s")
        print(f"boot to SSH under TCG: {machine.wait_ssh():.0f} s")
        yield machine
    finally:
        machine.down()
        shutil.rmtree(machine.fleet_out, ignore_errors=True)  # ~800 MB: pytest keeps tmp dirs


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def until(what: str, vm: RouterVM, timeout: float, probe: Callable[[], T], every: float = 3.0) -> T:
    """`probe()` again until it gives something true; that, or the test fails with the
    router's journals."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {timeout:.0f} s\n{journal(vm)}\n{unit_journal(vm)}")
        time.sleep(every)


def router_facts(vm: RouterVM) -> dict[str, str]:
    """The enrolment unit's and the gateway's state, the secret's owner and mode, whether an
    identity exists, and since when (monotonic µs) the gateway has been running."""
    script = (
        f"echo unit=$(systemctl is-active {UNIT}); "
        f"echo result=$(systemctl show -p Result --value {UNIT}); "
        "echo gateway=$(systemctl is-active plaza-gateway); "
        "echo since=$(systemctl show -p ActiveEnterTimestampMonotonic --value plaza-gateway); "
        "echo secret=$(stat -c '%U %a' /etc/plaza/fleet.secret 2>/dev/null || echo gone); "
        "echo enrolled=$(test -e /var/lib/plaza/cloud.json && echo yes || echo no)"
    )
    out = vm.ssh(script, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def unit_journal(vm: RouterVM) -> str:
    done = vm.ssh(f"systemctl --no-pager status {UNIT}; journalctl --no-pager -n 30 -u {UNIT}",
                  check=False)  # fmt: skip
    return f"--- {UNIT} ---\n{done.stdout}{done.stderr}"


def test_the_router_asks_to_join_and_waits_while_the_gateway_runs(
    fleet_vm: FleetRouterVM, state: dict
) -> None:
    vm = fleet_vm
    assert vm.internet is not None and vm.internet.account is not None
    venue_id = vm.internet.account.venue_id
    start = time.monotonic()
    rows = until("the router is not in the merchant's list", vm, ASK,
                 lambda: merchant(vm, "waiting"))  # fmt: skip
    state["asked"] = time.monotonic() - start
    assert len(rows) == 1, rows
    (row,) = rows
    assert row["tag"] == venue_id and row["router"][0] == "plaza-router", row
    state["pending"] = row["id"]
    # Never auto-trusted, and never holding up the router: the gateway is up in its local
    # mode while the unit waits; the secret is root's alone.
    facts = router_facts(vm)
    assert (facts["unit"], facts["gateway"], facts["secret"], facts["enrolled"]) == (
        "active", "active", "root 600", "no"
    ), (facts, unit_journal(vm))  # fmt: skip
    state["gateway_since"] = int(facts["since"])


def test_approved_in_the_dashboard_it_joins_and_heartbeats(
    fleet_vm: FleetRouterVM, state: dict
) -> None:
    vm = fleet_vm
    assert vm.internet is not None and vm.internet.account is not None
    venue_id = vm.internet.account.venue_id
    approved = merchant(vm, "approve", state["pending"], venue_id)
    assert approved["status"] == 200, approved
    device = approved["device"]
    start = time.monotonic()

    def heartbeat_with_config() -> str:
        row = merchant(vm, "venue", venue_id, device)["row"]
        # The first heartbeat reports config v0; v1 and up once it pulled the venue's config.
        return row if "online" in row.split() and re.search(r"config v[1-9]", row) else ""

    row = until("no heartbeat with the venue's config in the dashboard", vm, JOIN,
                heartbeat_with_config, every=5)  # fmt: skip
    joined = time.monotonic() - start
    assert merchant(vm, "waiting") == []
    identity = json.loads(vm.ssh("cat /var/lib/plaza/cloud.json").stdout)
    assert (identity["device_id"], identity["venue_id"]) == (device, venue_id)
    assert identity["cloud_url"] == labcloud.CLOUD_URL
    facts = router_facts(vm)
    # Done and gone: the unit ended well, the secret is removed (the unit's condition then
    # skips it at every later boot), the gateway was restarted onto the identity.
    assert (facts["unit"], facts["result"], facts["secret"], facts["gateway"]) == (
        "inactive", "success", "gone", "active"
    ), (facts, unit_journal(vm))  # fmt: skip
    assert int(facts["since"]) > state["gateway_since"], facts
    print(
        f"\nboot to pending {state['asked']:.0f} s after SSH, approval to heartbeat with "
        f"config {joined:.0f} s (emulated, TCG): {row}"
    )


def test_enrolled_the_unit_is_skipped_and_the_gateway_left_alone(
    fleet_vm: FleetRouterVM, state: dict
) -> None:
    """Idempotent: started again (as at every later boot) its conditions skip it, nothing runs
    and the gateway is not restarted."""
    vm = fleet_vm
    before = router_facts(vm)
    vm.ssh(f"systemctl start {UNIT}")
    result = vm.ssh(f"systemctl show -p ConditionResult --value {UNIT}").stdout.strip()
    after = router_facts(vm)
    assert result == "no", unit_journal(vm)
    assert after["since"] == before["since"] and after["gateway"] == "active", (before, after)
    assert after["unit"] == "inactive" and after["secret"] == "gone", after
