"""`plaza-provision-agent`: the router's half of provisioning, run there over SSH.

It is part of the router install (the Debian package), imports nothing the router lacks
(no `rich`), and does what must happen ON the router:

- `apply-config NEW [--timeout N]`: config test-and-rollback (provisioning/rollback.py):
  `plaza-gateway check-config` on NEW before it replaces anything, install, restart, wait for
  the cloud, restore the old config if the cloud stays silent. SIGHUP is ignored, so a config
  that cuts the SSH session does not stop the rollback.
- `boot-check`: at boot, a config still on trial (power cut before the cloud answered) is
  replaced by the previous one (run by a oneshot unit ordered before plaza-gateway).
- `fleet-enrol --secret-file F --venue-tag T`: an image's first boot (provisioning/fleet_enrol.py):
  ask to join with the fleet secret and wait until the merchant approves it; then the secret
  file is removed (plaza-fleet-enrol.service runs it and restarts the gateway).
- `check`: the router-local health checks, one JSON object per line (provisioning/checks.py).

`--root DIR` prefixes every path (tests and chroots); commands are taken from PATH.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from provisioning.errors import CONFIG_REFUSED, OK, USAGE, ProvisionError
from provisioning.rollback import ConfigRollout

CONFIG = "/etc/plaza/gateway.toml"
UNITS = ("plaza-gateway", "plaza-portal", "plaza-dnsmasq")
RESTART = "systemctl restart " + " ".join(UNITS)


def rooted(root: str, path: str) -> Path:
    return Path(root + path) if root not in ("", "/") else Path(path)


def check_with_gateway(path: Path) -> None:
    """`plaza-gateway check-config` on the new file: the router's own judge of its config
    (it also checks that the LAN interface exists on this machine)."""
    proc = subprocess.run(
        ["plaza-gateway", "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise ProvisionError(
            CONFIG_REFUSED,
            f"the new config fails check-config: {why[-1] if why else proc.returncode}",
            "fix the venue config file; the router keeps its old config",
        )


def restart_with(command: str) -> None:
    subprocess.run(shlex.split(command), check=False, capture_output=True)


def cloud_probe(
    url: str, state_dir: Path, ca_bundle: str, timeout: float = 5.0
) -> Callable[[], bool]:
    """True once the router reaches the cloud at `url` (the new config's): a signed heartbeat
    accepted when the router is enrolled (proves the key too), else any HTTP answer from the
    cloud's URL, its certificate checked against `ca_bundle` as the uplink would."""
    context = ssl.create_default_context(cafile=ca_bundle or None)

    def probe() -> bool:
        if (state_dir / "cloud.json").exists():
            from gateway.uplink.identity import UplinkError
            from gateway.uplink.start import uplink_for

            try:
                uplink_for(state_dir, url=url, ca_bundle=ca_bundle).heartbeat()
                return True
            except UplinkError:
                return False
        try:
            with urllib.request.urlopen(
                url.rstrip("/") + "/api/v1/", timeout=timeout, context=context
            ):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except (OSError, ValueError):
            return False

    return probe


def cmd_apply(args: argparse.Namespace) -> int:
    config = rooted(args.root, args.config)
    new = Path(args.new)
    check_with_gateway(new)
    cloud_url = args.cloud
    state_dir = Path("/var/lib/plaza")
    ca_bundle = ""
    try:
        from gateway import config as configmod

        loaded = configmod.load(str(new))
        cloud_url = cloud_url or loaded.cloud.url
        state_dir = Path(loaded.gateway.state_dir)  # the config's own path, never prefixed
        ca_bundle = loaded.cloud.ca_bundle
    except Exception:  # checked above; this only reads what the probe needs
        pass
    timeout = args.timeout if cloud_url else 0.0
    rollout = ConfigRollout(
        config=config,
        check=lambda path: None,  # already checked, before anything was touched
        restart=lambda: restart_with(args.restart),
        probe=cloud_probe(cloud_url, state_dir, ca_bundle) if cloud_url else (lambda: True),
        clock=time.monotonic,
        sleep=time.sleep,
    )
    outcome = rollout.apply(new, timeout)
    message = outcome.message if cloud_url else "new config in force; no cloud URL to test it"
    print(
        json.dumps(
            {"applied": outcome.applied, "waited": round(outcome.waited, 1), "message": message}
        )
    )
    return OK


def cmd_boot_check(args: argparse.Namespace) -> int:
    """At boot, before plaza-gateway starts (a oneshot unit ordered before it, never an
    ExecStartPre: that would also run at the trial's own restart): an unconfirmed config goes."""
    rollout = ConfigRollout(
        config=rooted(args.root, args.config),
        check=lambda path: None,
        restart=lambda: None,  # the services start after this, with the restored config
        probe=lambda: True,
        clock=time.monotonic,
        sleep=time.sleep,
    )
    done = rollout.recover()
    print(json.dumps({"recovered": bool(done), "message": done or "nothing pending"}))
    return OK


def http_post(ca_bundle: str, timeout: float = 15.0) -> Callable[[str, dict], tuple[int, dict]]:
    context = ssl.create_default_context(cafile=ca_bundle or None)

    def post(url: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}

    return post


def cmd_fleet_enrol(args: argparse.Namespace) -> int:
    """First boot of an image with a fleet secret: ask to join, wait for the merchant."""
    from gateway import config as configmod
    from gateway.uplink.transport import version
    from provisioning.fleet_enrol import FleetEnrolment

    config = configmod.load(str(rooted(args.root, args.config)))
    url = args.cloud or config.cloud.url
    if not url:
        raise ProvisionError(USAGE, "no cloud URL: --cloud or [cloud] url")
    secret = Path(args.secret_file).read_text().strip()
    enrolment = FleetEnrolment(
        state_dir=Path(config.gateway.state_dir),
        cloud_url=url,
        secret=secret,
        venue_tag=args.venue_tag,
        post=http_post(config.cloud.ca_bundle),
        clock=time.monotonic,
        sleep=time.sleep,
        version=version(),
    )
    identity = enrolment.run(args.interval, args.timeout, args.max_interval)
    # Enrolled: the secret has done its one job. It only lets a router ASK, and is in every
    # image, so keeping it buys nothing and a router later revoked, resold or stolen could ask
    # again with a new key; the unit's ConditionPathExists also keys on it.
    Path(args.secret_file).unlink(missing_ok=True)
    print(
        json.dumps(
            {"enrolled": True, "device_id": identity.device_id, "venue_id": identity.venue_id}
        )
    )
    return OK


def cmd_check(args: argparse.Namespace) -> int:
    from provisioning import checks

    for line in checks.router_checks(rooted(args.root, args.config), args.root, args.portal_ca):
        print(json.dumps(line), flush=True)
    return OK


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # SIGTERM unwinds like an exception, so a config on trial is put back on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(prog="plaza-provision-agent", description=__doc__)
    parser.add_argument("--root", default="", help="prefix for every path (tests, chroots)")
    parser.add_argument("--config", default=CONFIG, help=f"the router config (default {CONFIG})")
    sub = parser.add_subparsers(dest="command", required=True)
    apply = sub.add_parser("apply-config", help="install a config; roll back if the cloud is lost")
    apply.add_argument("new", help="the new config file (already on the router)")
    apply.add_argument("--timeout", type=float, default=60.0, help="seconds to reach the cloud")
    apply.add_argument("--cloud", default="", help="the cloud URL (default: the config's)")
    apply.add_argument("--restart", default=RESTART, help=f"restart command ({RESTART!r})")
    apply.set_defaults(func=cmd_apply)
    sub.add_parser(
        "boot-check", help="at boot: put back the previous config if a new one was on trial"
    ).set_defaults(func=cmd_boot_check)
    fleet = sub.add_parser(
        "fleet-enrol",
        help="first boot: ask to join with the fleet secret, wait for the merchant's approval",
    )
    fleet.add_argument("--secret-file", required=True, help="the fleet secret baked in the image")
    fleet.add_argument("--venue-tag", default="", help="shown to the merchant (e.g. a venue id)")
    fleet.add_argument("--cloud", default="", help="the cloud URL (default: [cloud] url)")
    fleet.add_argument("--interval", type=float, default=30.0, help="seconds between asks")
    fleet.add_argument(
        "--max-interval", type=float, default=0.0, help="double the wait after each ask up to S"
    )
    fleet.add_argument("--timeout", type=float, default=0.0, help="give up after S (0: never)")
    fleet.set_defaults(func=cmd_fleet_enrol)
    check = sub.add_parser("check", help="router-local health checks as JSON lines")
    check.add_argument(
        "--portal-ca",
        default="",
        help="CA file for the portal's certificate (default: the system trust store, as phones)",
    )
    check.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ProvisionError as exc:
        print(json.dumps({"error": exc.message, "hint": exc.hint, "exit": exc.code}))
        print(f"plaza-provision-agent: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        print(f"plaza-provision-agent: {exc}", file=sys.stderr)
        return USAGE


if __name__ == "__main__":
    sys.exit(main())
