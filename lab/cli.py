"""`plaza-lab`: bring the virtual venue up and down, look at it, run commands in it."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lab.topology import Lab, LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plaza-lab", description=__doc__)
    parser.add_argument("--name", default=os.environ.get("PLAZA_LAB", "plaza"), help="lab name")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create the namespaces and start the services")
    up.add_argument("--phones", type=int, default=1)
    up.add_argument("--wallet", choices=("oidc", "alipay"), default="oidc", help="wallet dialect")
    up.add_argument(
        "--no-cloud", dest="cloud", action="store_false",
        help="without the Plaza cloud (by default it runs on the fake internet, router enrolled)",
    )  # fmt: skip
    st = sub.add_parser("status", help="describe the running lab")
    st.add_argument("--json", action="store_true")
    ex = sub.add_parser("exec", help="run a command in a lab host: exec NAME -- CMD...")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ctl = sub.add_parser(
        "ctl", help="plaza-ctl against the lab's gateway: ctl clients, ctl auth phone1's-MAC ..."
    )
    ctl.add_argument("ctl_args", nargs=argparse.REMAINDER, metavar="ARGS")
    sub.add_parser("down", help="remove everything the lab made (idempotent)")
    demo = sub.add_parser("demo", help="up, a narrated shopper journey, down")
    demo.add_argument("--wallet", choices=("oidc", "alipay"), default="oidc", help="wallet dialect")
    vm = sub.add_parser(
        "vm",
        help="the lab as VMs (Vagrant + libvirt): vm up|demo|outage|crash|roam|browser|down|status",
    )
    vm.add_argument(
        "action", choices=("up", "demo", "outage", "crash", "roam", "browser", "down", "status")
    )
    vm.add_argument("--phones", type=int, default=int(os.environ.get("PLAZA_PHONES", "2")))
    vm.add_argument("--all", action="store_true", help="down: also the box, volumes, libvirtd")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("plaza-lab: needs root (network namespaces)", file=sys.stderr)
        return 2
    lab = Lab(args.name)
    try:
        if args.command == "up":
            if not 1 <= args.phones <= 250:
                raise LabError("--phones must be between 1 and 250")
            lab.up(phones=args.phones, wallet_dialect=args.wallet, cloud=args.cloud)
            portal = lab.status()["portal_url"]
            print(f"lab {args.name!r} up with {args.phones} phone(s); portal {portal}")
        elif args.command == "status":
            status = lab.status()
            if args.json:
                print(json.dumps(status, indent=2))
            elif not status["up"]:
                print(f"lab {args.name!r} is down")
            else:
                print(f"router   {status['router']['netns']}  {status['router']['lan_ipv4']}")
                print(
                    f"internet {status['internet']['netns']}  web {status['internet']['web_ipv4']}"
                )
                for p in status["phones"]:
                    print(f"{p['name']:8} {p['netns']}  {p['mac']}  {p['ipv4']}")
                print(f"portal   {status['portal_url']}")
                print(f"control  {status['router']['control_socket']}  (plaza-lab ctl clients)")
            return 0 if status["up"] else 1
        elif args.command == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                raise LabError("exec needs a command: plaza-lab exec phone1 -- curl ...")
            ns = lab.netns_of(args.host)
            os.execvpe("ip", ["ip", "netns", "exec", ns, *cmd], _exec_env(lab, args.host))
        elif args.command == "ctl":
            if not lab.is_up():
                raise LabError(f"lab {args.name!r} is down: plaza-lab up first")
            ctl_args = args.ctl_args[1:] if args.ctl_args[:1] == ["--"] else args.ctl_args
            ctl_cmd = [sys.executable, "-m", "gateway.ops.ctl", "--socket", lab.control_socket]
            os.execvp("ip", ["ip", "netns", "exec", lab.state.router, *ctl_cmd, *ctl_args])
        elif args.command == "down":
            removed = lab.down()
            print(f"lab {args.name!r} down; removed {len(removed)} namespace(s)")
        elif args.command == "demo":
            from lab import demo

            return demo.main(args.name, args.wallet)
        elif args.command == "vm":
            from lab import vagrant_cli

            return vagrant_cli.main(args.action, args.phones, args.all)
    except LabError as exc:
        print(f"plaza-lab: {exc}", file=sys.stderr)
        return 1
    return 0


def _exec_env(lab: Lab, host: str) -> dict[str, str]:
    """The caller's environment, with Plaza's commands on PATH (plaza-lab may have been run by
    its full path from a virtualenv) and, on the router, plaza-ctl pointed at this lab's daemon
    (over any PLAZA_CONTROL_SOCKET of the caller's: the lab's router has one daemon, this one)."""
    env = dict(os.environ)
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    if lab.netns_of(host) == lab.state.router:
        env["PLAZA_CONTROL_SOCKET"] = lab.control_socket
    return env


if __name__ == "__main__":
    sys.exit(main())
