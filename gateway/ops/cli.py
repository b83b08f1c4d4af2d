"""`plaza-gateway`: run the daemon, check a config, render the ruleset or dnsmasq fragment,
enrol with the cloud."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

from gateway import config as configmod
from gateway import config_uci
from plaza import logs

DEFAULT_CONFIG = "/etc/plaza/gateway.toml"


def _interface_index(path: str, name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        where = config_uci.name_in(path, "lan", "interface")
        raise configmod.ConfigError(f"{path}: {where}: no such interface: {name!r}") from None


def _disabled(path: str) -> str:
    """What `run` says of a disabled config: which setting, and how to turn it on."""
    if config_uci.is_uci(Path(path)):
        how = "uci set plaza.gateway.enabled=1; uci commit plaza; /etc/init.d/plaza start"
        return f"disabled (plaza.gateway.enabled is '0'); to enable: {how}"
    return "disabled ([gateway] enabled = false); set it to true to start"


def cmd_check_config(args: argparse.Namespace) -> int:
    config = configmod.load(args.config)
    if not args.offline:
        _interface_index(args.config, config.lan.interface)
    note = "" if config.gateway.enabled else f", but {_disabled(args.config)}"
    print(f"{args.config}: OK{note}")
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    """The effective config, every default filled in, as UCI or TOML: for a technician."""
    config = configmod.load(args.config)
    if (args.format or ("uci" if config_uci.is_uci(Path(args.config)) else "toml")) == "uci":
        sys.stdout.write(config_uci.dump(config, configmod.SECTIONS, configmod.LISTS))
    else:
        print(configmod.to_toml(config))
    return 0


def cmd_ruleset(args: argparse.Namespace) -> int:
    from gateway.dataplane import ruleset

    sys.stdout.write(ruleset.render(configmod.load(args.config)))
    return 0


def cmd_dnsmasq_config(args: argparse.Namespace) -> int:
    from gateway.stations import dnsmasq

    print(dnsmasq.write(configmod.load(args.config), Path(args.dir)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import gc

    from gateway.listen import parse_listen
    from gateway.ops import memory

    memory.configure()  # before any thread: see gateway/ops/memory.py

    config = configmod.load(args.config)
    if not config.gateway.enabled:
        print(f"plaza-gateway: {args.config}: {_disabled(args.config)}", file=sys.stderr)
        return config_uci.EXIT_DISABLED
    logs.configure(config.gateway.log_level, args.log_format, args.log_timestamps)
    try:
        listen = parse_listen(args.metrics or config.gateway.metrics_listen)
    except ValueError as exc:
        raise configmod.ConfigError(f"--metrics: {exc}") from None
    ifindex = _interface_index(args.config, config.lan.interface)

    from gateway.assemble import open_gateway
    from gateway.daemon import Daemon, acquire_lock
    from gateway.dataplane.kernel import NftFirewall

    lock = acquire_lock(config)
    try:
        gateway = open_gateway(config, NftFirewall())
        gateway.start()
        # What exists now (modules, config, restored sessions) lives as long as the daemon:
        # out of the collector's way, so a full collection walks only what came after.
        gc.collect()
        gc.freeze()
        memory.trim()
        asyncio.run(Daemon(config, gateway, ifindex, metrics_listen=listen).run())
    finally:
        os.close(lock)
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    """Enrol this router with the cloud. The claim code is a secret: read from stdin unless
    given, so it need not appear in shell history or the process list."""
    from gateway.uplink.identity import UplinkError
    from gateway.uplink.start import uplink_for

    config = configmod.load(args.config)
    url = args.cloud or config.cloud.url
    if not url:
        raise configmod.ConfigError("--cloud URL is needed ([cloud] url is not set)")
    claim = args.claim
    if claim in (None, "-"):
        if sys.stdin.isatty():
            import getpass

            claim = getpass.getpass("claim code: ")
        else:
            claim = sys.stdin.readline()
    ca_bundle = args.ca_bundle or config.cloud.ca_bundle
    uplink = uplink_for(config.gateway.state_dir, ca_bundle=ca_bundle)
    try:
        identity = uplink.enrol(url, claim, force=args.force)
    except UplinkError as exc:
        print(f"plaza-gateway: {exc}", file=sys.stderr)
        return 1
    print(
        f"plaza-gateway: enrolled for venue {identity.venue_id} at {identity.cloud_url}",
        file=sys.stderr,
    )
    print(identity.device_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plaza-gateway", description=__doc__)
    parser.add_argument(
        "--config",
        "-c",
        default=DEFAULT_CONFIG,
        help="the config: TOML, or UCI (/etc/config/plaza on OpenWrt)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, or 'off' "
        "(default: [gateway] metrics_listen)",
    )
    logs.add_arguments(run)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate the config and exit")
    check.add_argument("--offline", action="store_true", help="skip checks of this machine")
    check.set_defaults(func=cmd_check_config)
    show = sub.add_parser("show-config", help="print the effective config, defaults filled in")
    show.add_argument("--format", choices=("uci", "toml"), help="default: the file's own")
    show.set_defaults(func=cmd_show_config)
    sub.add_parser("ruleset", help="print the nftables table").set_defaults(func=cmd_ruleset)
    dm = sub.add_parser("dnsmasq-config", help="write the dnsmasq fragment")
    dm.add_argument("--dir", required=True)
    dm.set_defaults(func=cmd_dnsmasq_config)
    enrol = sub.add_parser("enrol", help="enrol this router with the cloud; prints its device id")
    enrol.add_argument("--cloud", metavar="URL", help="the cloud's base URL (default: [cloud] url)")
    enrol.add_argument(
        "--claim",
        metavar="CODE",
        help="the venue's one-time claim code; omitted or '-': read from stdin (keeps it out "
        "of shell history and ps)",
    )
    enrol.add_argument(
        "--ca-bundle", metavar="PATH", help="PEM trust anchors for the cloud's TLS certificate"
    )
    enrol.add_argument("--force", action="store_true", help="replace an existing enrolment")
    enrol.set_defaults(func=cmd_enrol)
    args = parser.parse_args(argv)
    from gateway.daemon import AlreadyRunning
    from gateway.dataplane.firewall import NftError

    try:
        return args.func(args)
    except (configmod.ConfigError, AlreadyRunning, NftError) as exc:
        print(f"plaza-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
