"""`plaza-provision verify`: a health check the technician can trust. Each line is
`ok|fail|skip NAME: REASON`, the reason saying what to do. Router-local checks run on the
router (provisioning/checks.py through the agent); whether the router heartbeats is asked of
the cloud (provisioning/cloud_status.py); the captive redirect is probed from the laptop when
it sits on the router's LAN (`--lan-probe URL`), since a probe from the router itself would
not pass through the captive rules."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from provisioning.agent import UNITS
from provisioning.cloud_status import Fetch, heartbeat_line
from provisioning.errors import CHECK_FAILED, OK
from provisioning.report import Reporter
from provisioning.ssh import Runner, as_root

Line = dict[str, str]
Probe = Callable[[str], tuple[int, str]]  # url -> (status, Location)


@dataclass
class VerifyPlan:
    root: str = ""
    cloud: str = ""
    claim: str = ""
    lan_probe: str = ""  # an http:// URL fetched from this laptop, expected to be redirected
    wait: float = 0.0  # seconds to keep trying to reach a router that is still booting
    portal_ca: str = ""  # a CA file ON THE ROUTER for the portal's certificate (labs)


def http_probe(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """One GET without following redirects: the redirect is what is checked."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"Host": parts.netloc})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Location", "")
    finally:
        conn.close()


def service_lines(runner: Runner) -> list[Line]:
    out = runner.run(["systemctl", "is-active", *UNITS])
    states = out.stdout.split()
    lines = []
    for unit, state in zip(UNITS, states + ["unknown"] * len(UNITS), strict=False):
        if state == "active":
            lines.append({"check": f"service {unit}", "status": "ok", "reason": "active"})
        else:
            lines.append(
                {
                    "check": f"service {unit}",
                    "status": "fail",
                    "reason": f"{state}: journalctl -u {unit} -n 50 on the router, then "
                    f"systemctl restart {unit}",
                }
            )
    return lines


def router_lines(runner: Runner, root: str, portal_ca: str = "") -> list[Line]:
    argv = ["plaza-provision-agent", *(["--root", root] if root else []), "check"]
    if portal_ca:
        argv += ["--portal-ca", portal_ca]
    out = runner.run(argv, timeout=60)
    lines = []
    for text in out.stdout.splitlines():
        try:
            item = json.loads(text)
        except ValueError:
            continue
        if isinstance(item, dict) and {"check", "status", "reason"} <= item.keys():
            lines.append({k: str(item[k]) for k in ("check", "status", "reason")})
    if not lines:
        why = (out.stderr.strip().splitlines() or [f"exit {out.rc}"])[-1]
        lines.append(
            {
                "check": "router",
                "status": "fail",
                "reason": f"the agent did not answer ({why}): is plaza installed? run flash",
            }
        )
    return lines


def captive_line(url: str, probe: Probe) -> Line:
    try:
        status, location = probe(url)
    except OSError as exc:
        return {
            "check": "captive-probe",
            "status": "fail",
            "reason": f"{url}: no answer ({exc}): is this laptop on the router's LAN?",
        }
    if status in (301, 302, 303, 307, 308, 511) and location:
        return {
            "check": "captive-probe",
            "status": "ok",
            "reason": f"{url} answered {status} → {location}",
        }
    return {
        "check": "captive-probe",
        "status": "fail",
        "reason": f"{url} answered {status} "
        "without a redirect: this laptop is not captive (already authorized, or not on "
        "the LAN, or the nft table is missing)",
    }


def verify(
    runner: Runner, plan: VerifyPlan, reporter: Reporter, fetch: Fetch, probe: Probe = http_probe
) -> int:
    host = runner.host
    with reporter.step(host, "connect"):
        as_root(runner, plan.wait)  # nft and the state dir need root
    with reporter.step(host, "checks"):
        lines = service_lines(runner) + router_lines(runner, plan.root, plan.portal_ca)
    if plan.cloud and plan.claim:
        with reporter.step(host, "ask the cloud"):
            lines.append(heartbeat_line(plan.cloud, plan.claim, fetch))
    else:
        lines.append(
            {
                "check": "heartbeat",
                "status": "skip",
                "reason": "not asked of the "
                "cloud: give --cloud URL and --claim CODE (the code used to enrol)",
            }
        )
    if plan.lan_probe:
        lines.append(captive_line(plan.lan_probe, probe))
    else:
        lines.append(
            {
                "check": "captive-probe",
                "status": "skip",
                "reason": "from a laptop on the router's LAN, add --lan-probe http://example.com/",
            }
        )
    for line in lines:
        reporter.check(host, line["status"], line["check"], line["reason"])
    return CHECK_FAILED if any(line["status"] == "fail" for line in lines) else OK
