"""`plaza-provision`: the field technician's tool. Flash a router over SSH (package, config
with rollback, enrolment, services), verify it, or do many from a CSV file.

Exit codes: 0 ok, 1 a verify check failed, 2 usage, 3 unreachable / SSH key refused / host
key changed, 4 install failed (previous version still installed), 5 config refused or rolled
back (old config in force), 6 claim code refused, 7 cloud unreachable, 8 disk full, 9 needs a
person (see message), 10 `rich` missing (pip install 'plaza[provision]' or use --json).
Batch: 0 when every router is ok, else the highest router code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from provisioning import tls_files
from provisioning.batch import Row, State, read_rows, run_batch
from provisioning.cloud_status import http_fetch
from provisioning.errors import NAMES, OK, USAGE, ProvisionError
from provisioning.flash import FlashPlan, flash
from provisioning.report import JsonReporter, Reporter, rich_reporter
from provisioning.ssh import OpenSSH, Runner
from provisioning.verify import VerifyPlan, verify

KNOWN_HOSTS = Path.home() / ".config/plaza/provision_known_hosts"
RunnerFactory = Callable[[str, str, int], Runner]  # host, user, port


def ssh_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", default="root", help="SSH login (default root)")
    p.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    p.add_argument("--identity", "-i", metavar="KEY", help="SSH private key (ssh -i)")
    p.add_argument(
        "--sudo",
        action="store_true",
        help="run the router's commands through sudo -n (a login that is not root)",
    )
    p.add_argument(
        "--ssh-option",
        "-o",
        action="append",
        default=[],
        metavar="OPT",
        help="extra ssh -o option (repeatable)",
    )
    p.add_argument(
        "--known-hosts",
        type=Path,
        default=KNOWN_HOSTS,
        help=f"provisioning known_hosts file (default {KNOWN_HOSTS})",
    )
    p.add_argument("--root", default="", help="prefix of the router's paths (tests, chroots)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, no bars")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="keep trying to reach a router still booting for S seconds (default 0)",
    )


def flash_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cloud", default="", metavar="URL", help="the cloud's base URL")
    p.add_argument("--package", type=Path, metavar="DEB", help="plaza_<ver>_<arch>.deb to install")
    p.add_argument(
        "--portal-cert",
        type=Path,
        metavar="PEM",
        help="the portal's certificate chain, installed at the venue config's [portal] cert_file",
    )
    p.add_argument("--portal-key", type=Path, metavar="PEM", help="its private key (key_file)")
    p.add_argument(
        "--rollback-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a new config has to reach the cloud (default 60)",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="plaza-provision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    f = sub.add_parser("flash", help="install, configure, enrol and start one router")
    f.add_argument("host")
    f.add_argument(
        "--claim",
        required=True,
        metavar="CODE",
        help="the venue's claim code; '-': read it from stdin (keeps it out of shell history)",
    )
    f.add_argument("--venue-config", type=Path, metavar="FILE", help="router config (TOML)")
    flash_arguments(f)
    ssh_arguments(f)
    v = sub.add_parser("verify", help="health-check one router")
    v.add_argument("host")
    v.add_argument("--cloud", default="", metavar="URL", help="ask this cloud for heartbeats")
    v.add_argument(
        "--claim",
        "--token",
        default="",
        metavar="CODE",
        help="the claim code the router enrolled with (the cloud's credential); '-': stdin",
    )
    v.add_argument("--ca-bundle", default="", help="PEM trust anchors for the cloud")
    v.add_argument(
        "--portal-ca",
        default="",
        metavar="PATH",
        help="CA file on the router for the portal's certificate (a lab CA); "
        "default: the router's system trust, as phones",
    )
    v.add_argument(
        "--lan-probe",
        default="",
        metavar="URL",
        help="from a laptop on the LAN: an http:// URL that must be redirected",
    )
    ssh_arguments(v)
    b = sub.add_parser("batch", help="flash (or verify, when done before) routers from a CSV")
    b.add_argument("file", type=Path, help="CSV: host,claim[,venue_config,user,port]")
    b.add_argument("--jobs", "-j", type=int, default=4, help="routers at a time (default 4)")
    b.add_argument("--state", type=Path, help="state file (default FILE.state.json)")
    flash_arguments(b)
    ssh_arguments(b)
    return top


class OpenSSHFactory:
    """Runners for each router, sharing one ControlMaster directory so a router's many
    commands ride one SSH connection; `close` ends the masters and removes the directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.control = Path(tempfile.mkdtemp(prefix="plaza-ssh-"))
        self.runners: list[OpenSSH] = []

    def __call__(self, host: str, user: str, port: int) -> Runner:
        args = self.args
        runner = OpenSSH(
            host,
            user=user or args.user,
            port=port or args.port,
            identity=args.identity,
            known_hosts=args.known_hosts,
            options=args.ssh_option,
            sudo=args.sudo,
            control_dir=self.control,
        )
        self.runners.append(runner)
        return runner

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
        shutil.rmtree(self.control, ignore_errors=True)


def run(args: argparse.Namespace, reporter: Reporter, make_runner: RunnerFactory) -> int:
    def one_router(attempt: Callable[[], tuple[int, str]]) -> int:
        """The router named on the command line: its outcome, or the ProvisionError that
        stopped it, is its one final line and the exit code, the same for flash and verify."""
        try:
            code, message = attempt()
        except ProvisionError as exc:
            code, message = exc.code, exc.message
        reporter.done(args.host, code, message)
        return code

    def plan_flash(claim: str, venue_config: Path | None) -> FlashPlan:
        """The command line's flash options for one router (its claim and venue config are
        the command line's, or its row's in a batch)."""
        tls = None
        if args.portal_cert or args.portal_key:
            if not (args.portal_cert and args.portal_key):
                raise ProvisionError(USAGE, "--portal-cert and --portal-key go together")
            tls = tls_files.load(args.portal_cert, args.portal_key, venue_config)
        return FlashPlan(
            claim=claim,
            cloud=args.cloud,
            venue_config=venue_config,
            portal_tls=tls,
            package=args.package,
            root=args.root,
            rollback_timeout=args.rollback_timeout,
            wait=args.wait,
        )

    if args.command == "flash":
        flash_plan = plan_flash(args.claim, args.venue_config)  # its files checked first
        runner = make_runner(args.host, "", 0)
        return one_router(lambda: (OK, flash(runner, flash_plan, reporter).get("enrol", "")))
    if args.command == "verify":
        runner = make_runner(args.host, "", 0)
        verify_plan = VerifyPlan(
            root=args.root,
            cloud=args.cloud,
            claim=args.claim,
            lan_probe=args.lan_probe,
            wait=args.wait,
            portal_ca=args.portal_ca,
        )

        def checked() -> tuple[int, str]:
            code = verify(runner, verify_plan, reporter, http_fetch(args.ca_bundle))
            return code, "all ok" if code == OK else "a check failed"

        return one_router(checked)
    rows = read_rows(args.file)
    state = State(args.state or args.file.with_name(args.file.name + ".state.json"))

    def flash_one(row: Row) -> dict[str, str]:
        plan = plan_flash(row.claim, row.venue_config)
        return flash(make_runner(row.host, row.user, row.port), plan, reporter)

    def verify_one(row: Row) -> int:
        plan = VerifyPlan(root=args.root, cloud=args.cloud, claim=row.claim, wait=args.wait)
        return verify(make_runner(row.host, row.user, row.port), plan, reporter, http_fetch())

    codes = run_batch(rows, state, flash_one, verify_one, reporter, jobs=args.jobs)
    return max(codes.values(), default=OK)


def read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt).strip()
    return sys.stdin.readline().strip()


def refused(args: argparse.Namespace, exc: ProvisionError) -> int:
    """An error before any router was touched: one line on stderr, and with --json the same as
    an object on stdout, so a script reading stdout sees why too."""
    print(f"plaza-provision: {exc}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "result": NAMES.get(exc.code, "error"),
                    "exit": exc.code,
                    "message": exc.message,
                    "hint": exc.hint,
                }
            )
        )
    return exc.code


def main(
    argv: list[str] | None = None,
    make_runner: Callable[[argparse.Namespace], RunnerFactory] = OpenSSHFactory,
) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "claim", None) == "-":
        args.claim = read_secret("claim code: ")
    try:
        for path in (getattr(args, "venue_config", None), getattr(args, "package", None)):
            if path is not None and not path.is_file():
                raise ProvisionError(USAGE, f"{path}: no such file")
        reporter = JsonReporter(sys.stdout) if args.json else rich_reporter()
    except ProvisionError as exc:
        return refused(args, exc)
    factory = make_runner(args)
    try:
        return run(args, reporter, factory)
    except ProvisionError as exc:  # before any router: a usage error (the CSV, the state file)
        return refused(args, exc)
    except KeyboardInterrupt:
        return 130
    finally:
        reporter.close()
        getattr(factory, "close", lambda: None)()


if __name__ == "__main__":
    sys.exit(main())
