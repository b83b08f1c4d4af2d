"""`plaza-ctl`: the operator's view of the gateway through its control socket.

What it prints comes partly from the stations (a DHCP host name is whatever bytes a phone
sent): text output shows every character that is not printable as an escape (`\\x1b`), so no
station can move the operator's cursor, clear the screen or retitle the terminal. JSON output
is escaped by json itself (ASCII only), and DEL, the one control character json leaves, too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from gateway.control_client import ControlClient, ControlError

DEFAULT_SOCKET = "/run/plaza/control.sock"


def _safe(value: object) -> str:
    """`value` as text with every non-printable character escaped (a terminal obeys ESC)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _json(value: object) -> str:
    return json.dumps(value, indent=2).replace("\x7f", "\\u007f")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}GB"  # pragma: no cover


def _print_clients(clients: list[dict]) -> None:
    print(
        f"{'MAC':17}  {'IP':15}  {'STATE':10}  {'LEFT':>7}  {'DOWN':>8}  {'UP':>8}  "
        f"{'QUOTA LEFT':>10}  HOSTNAME"
    )
    for c in sorted(clients, key=lambda c: (c["state"], c["ip"] or "")):
        left = c.get("seconds_remaining")
        left_s = "-" if left is None else f"{left // 60}m{left % 60:02d}s"
        down, up = _size(c.get("bytes_down")), _size(c.get("bytes_up"))
        quota = _size(c.get("bytes_remaining"))
        print(
            f"{_safe(c['mac']):17}  {_safe(c['ip'] or '-'):15}  {_safe(c['state']):10}  "
            f"{left_s:>7}  {down:>8}  {up:>8}  {quota:>10}  {_safe(c['hostname'])}"
        )


# plaza-ctl auth options -> control API policy overrides (see gateway/stations/policy.py)
AUTH_OPTIONS = {
    "minutes": "minutes",
    "idle": "idle_minutes",
    "quota_mb": "quota_total_mb",
    "quota_up_mb": "quota_up_mb",
    "quota_down_mb": "quota_down_mb",
    "rate_up_kbit": "rate_up_kbit",
    "rate_down_kbit": "rate_down_kbit",
}


def _overrides(args: argparse.Namespace) -> dict[str, int]:
    found = {key: getattr(args, opt) for opt, key in AUTH_OPTIONS.items()}
    if args.rate_kbit is not None:
        for key in ("rate_up_kbit", "rate_down_kbit"):
            if found[key] is None:
                found[key] = args.rate_kbit
    return {k: v for k, v in found.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plaza-ctl", description=__doc__)
    parser.add_argument(
        "--socket",
        default=os.environ.get("PLAZA_CONTROL_SOCKET", DEFAULT_SOCKET),
        help="control socket of the gateway (env PLAZA_CONTROL_SOCKET)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    clients = sub.add_parser("clients", help="list known stations")
    clients.add_argument("--json", action="store_true")
    one = sub.add_parser("client", help="one station: session, policy, usage")
    one.add_argument("client")
    auth = sub.add_parser(
        "auth",
        help="authorize a client by MAC or IP",
        description="Authorize a client; options override the venue's [policy] for this "
        "session (0 lifts a limit). 1 MB = 1,000,000 bytes, 1 kbit = 1,000 bit/s.",
    )
    auth.add_argument("client")
    auth.add_argument("--minutes", type=int, help="session length")
    auth.add_argument("--idle", type=int, metavar="MINUTES", help="idle timeout")
    auth.add_argument("--quota-mb", type=int, metavar="MB", help="data quota, both directions")
    auth.add_argument("--quota-up-mb", type=int, metavar="MB", help="upload quota")
    auth.add_argument("--quota-down-mb", type=int, metavar="MB", help="download quota")
    auth.add_argument("--rate-kbit", type=int, metavar="KBIT", help="bandwidth, each way")
    auth.add_argument("--rate-up-kbit", type=int, metavar="KBIT", help="upload bandwidth")
    auth.add_argument("--rate-down-kbit", type=int, metavar="KBIT", help="download bandwidth")
    deauth = sub.add_parser("deauth", help="end a client's session")
    deauth.add_argument("client")
    for action, what in (("block", "never let this MAC online (ends its session now)"),
                         ("unblock", "lift a run-time block"),
                         ("trust", "always online without the portal (e.g. the till)"),
                         ("untrust", "lift a run-time trust")):  # fmt: skip
        sub.add_parser(action, help=what).add_argument("mac")
    sub.add_parser("access", help="the trusted and blocked MACs in force")
    args = parser.parse_args(argv)
    ctl = ControlClient(args.socket)
    try:
        if args.command == "clients":
            found = ctl.clients()
            if args.json:
                print(_json(found))
            else:
                _print_clients(found)
        elif args.command == "client":
            print(_json(ctl.client(args.client)))
        elif args.command == "auth":
            c = ctl.call("auth", client=args.client, **_overrides(args))["client"]
            if c["expires_at"] is None:
                until = "further notice (trusted MAC)"
            else:
                until = time.strftime("%H:%M:%S", time.localtime(c["expires_at"]))
            print(f"authorized {_safe(c['mac'])} ({_safe(c['ip'])}) until {until}")
        elif args.command == "deauth":
            c = ctl.deauth(args.client)
            print(f"deauthorized {_safe(c['mac'])} ({_safe(c['ip'])})")
        elif args.command in ("block", "unblock", "trust", "untrust"):
            ctl.call("access", action=args.command, mac=args.mac)
            print(f"{args.command}ed {_safe(args.mac)}")
        elif args.command == "access":
            print(_json(ctl.call("access-lists")["access"]))
    except ControlError as exc:
        print(f"plaza-ctl: {_safe(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
