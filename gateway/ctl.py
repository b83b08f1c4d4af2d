"""`plaza-ctl`: the operator's view of the gateway through its control socket."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from gateway.control_client import ControlClient, ControlError

DEFAULT_SOCKET = "/run/plaza/control.sock"


def _print_clients(clients: list[dict]) -> None:
    print(f"{'MAC':17}  {'IP':15}  {'STATE':10}  {'LEFT':>7}  HOSTNAME")
    for c in sorted(clients, key=lambda c: (c["state"], c["ip"] or "")):
        left = c.get("seconds_remaining")
        left_s = "-" if left is None else f"{left // 60}m{left % 60:02d}s"
        print(f"{c['mac']:17}  {c['ip'] or '-':15}  {c['state']:10}  {left_s:>7}  {c['hostname']}")


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
    auth = sub.add_parser("auth", help="authorize a client by MAC or IP")
    auth.add_argument("client")
    auth.add_argument("--minutes", type=int)
    deauth = sub.add_parser("deauth", help="end a client's session")
    deauth.add_argument("client")
    args = parser.parse_args(argv)
    ctl = ControlClient(args.socket)
    try:
        if args.command == "clients":
            found = ctl.clients()
            if args.json:
                print(json.dumps(found, indent=2))
            else:
                _print_clients(found)
        elif args.command == "auth":
            c = ctl.auth(args.client, args.minutes)
            until = time.strftime("%H:%M:%S", time.localtime(c["expires_at"]))
            print(f"authorized {c['mac']} ({c['ip']}) until {until}")
        elif args.command == "deauth":
            c = ctl.deauth(args.client)
            print(f"deauthorized {c['mac']} ({c['ip']})")
    except ControlError as exc:
        print(f"plaza-ctl: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
