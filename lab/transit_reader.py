"""The lab's bus reader: a transit reader as the cloud sees one, on the fake internet.

A bus has its own LTE, so its reader talks to https://cloud.test from the internet side, like
the lab's other services. It is a device: it enrols with a claim code from `plaza-cloud
transit reader-claim` and signs every request with its own Ed25519 key, through the
gateway's own uplink client (gateway/uplink/enrolment.py and transport.py: the same device
protocol, another device kind), so there is no second copy of the protocol to drift.

Offline first, as on a bus: a rider's QR is checked with the cloud's key and the deny-list
the reader last pulled (no connection needed), the tap is numbered and kept in a backlog on
disk, and `upload` sends the backlog as one signed batch whenever there is signal. The last
batch sent is kept, so `resend` can show that a replayed batch adds nothing.

Run it in the lab's internet namespace (`run_in`), or as `python -m lab.transit_reader`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from lab.cloud import BIN, CLOUD_URL

ROOT = Path(__file__).resolve().parents[1]
STATE_FILE = "reader.json"
TIMEZONE = "Asia/Shanghai"  # the feed's agency_timezone: taps of one service day
TRANSFER_GAP = 18 * 60  # seconds between the demo's two boardings (the window is 60 min)


class ReaderError(RuntimeError):
    """The reader refused a card or the cloud refused the reader; str() says which."""


class BusReader:
    """One reader's state dir: the device key and identity (as a router's), plus
    `reader.json`: next sequence number, backlog, deny-list, QR key, the last batch sent."""

    def __init__(self, state_dir: str | Path, ca_bundle: str = "",
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        from gateway.uplink.transport import Transport

        self.state_dir = Path(state_dir)
        self.transport = Transport(self.state_dir, ca_bundle=ca_bundle, clock=clock)
        self.clock = clock

    # -- state ------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return {"next_seq": 1, "backlog": [], "deny": [], "qr_public_key": "", "last": []}
        return json.loads(path.read_text())

    def _save(self, state: dict[str, Any]) -> None:
        path = self.state_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=1))

    # -- the device protocol ------------------------------------------------------------------
    def enrol(self, claim_code: str, hostname: str, cloud_url: str = CLOUD_URL) -> str:
        """Claim the reader with its one-time code (a new key, kept here); its device id."""
        from gateway.uplink.enrolment import enrol
        from gateway.uplink.identity import UplinkError

        try:
            identity = enrol(self.transport, cloud_url, claim_code, force=True, hostname=hostname)
        except UplinkError as exc:
            raise ReaderError(f"enrolment: {exc}") from None
        return identity.device_id

    def _signed(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        from gateway.uplink.identity import UplinkError

        try:
            resp = self.transport.signed(method, path, body)
        except UplinkError as exc:
            raise ReaderError(f"{method} {path}: {exc}") from None
        if resp.status_code != 200:
            raise ReaderError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        answer: dict[str, Any] = resp.json()
        return answer

    def pull_denylist(self) -> dict[str, Any]:
        """The cards to refuse offline and the key card QRs are signed with, kept on disk."""
        answer = self._signed("GET", "/transit/denylist")
        state = self._load()
        state["deny"], state["qr_public_key"] = answer["cards"], answer["qr_public_key"]
        self._save(state)
        return answer

    def read(self, qr: str, stop_id: str, at: float | None = None) -> dict[str, Any]:
        """A rider boards: check the QR offline (signature, expiry, deny-list) and keep the
        tap in the backlog with the next sequence number; the tap."""
        from cloud.transit.cards import TransitError, check_qr
        from plaza import signing

        state = self._load()
        if not state["qr_public_key"]:
            raise ReaderError("no QR key yet: pull the deny-list once with signal")
        when = self.clock() if at is None else at
        try:
            card = check_qr(signing.load_public(state["qr_public_key"]), qr.strip(), when)
        except TransitError as exc:
            raise ReaderError(f"card refused: {exc}") from None
        if card in state["deny"]:
            raise ReaderError(f"card refused: {card} is on the deny-list")
        tap = {"seq": state["next_seq"], "card": card, "at": when, "stop_id": stop_id}
        state["next_seq"] += 1
        state["backlog"].append(tap)
        self._save(state)
        return tap

    def upload(self) -> dict[str, Any]:
        """Send the backlog as one signed batch; emptied once the cloud has it."""
        state = self._load()
        if not state["backlog"]:
            return {"received": 0, "stored": 0, "duplicates": 0}
        answer = self._signed("POST", "/transit/taps", {"taps": state["backlog"]})
        state["last"], state["backlog"] = state["backlog"], []
        self._save(state)
        return answer

    def resend(self) -> dict[str, Any]:
        """The last batch again, as after an answer lost on the way back: stored once."""
        last = self._load()["last"]
        if not last:
            raise ReaderError("no batch sent yet")
        return self._signed("POST", "/transit/taps", {"taps": last})


def boarding_times(now: float, gap: float = TRANSFER_GAP) -> tuple[float, float]:
    """Two boardings `gap` seconds apart, the second a minute ago, both in one service day of
    the feed's zone (a fare day ends at local midnight: a transfer never spans it)."""
    second = now - 60
    midnight = dt.datetime.combine(
        dt.datetime.fromtimestamp(second, ZoneInfo(TIMEZONE)).date(), dt.time(),
        ZoneInfo(TIMEZONE),
    ).timestamp()  # fmt: skip
    if second - gap < midnight:  # just after midnight: both late yesterday evening instead
        second = midnight - 60
    return second - gap, second


def run_in(
    netns: str, state_dir: Path, ca_bundle: str, *args: str, stdin: str | None = None
) -> dict[str, Any]:
    """`python -m lab.transit_reader ARGS` in a namespace (the bus's LTE: the fake
    internet); its JSON answer, or ReaderError with what it said."""
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, str(BIN / "python"), "-m", "lab.transit_reader",
         "--state", str(state_dir), "--ca", ca_bundle, *args],
        input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ReaderError(proc.stderr.strip() or proc.stdout.strip())
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, help="the reader's state directory")
    parser.add_argument("--ca", default="", help="CA bundle the cloud's certificate chains to")
    sub = parser.add_subparsers(dest="command", required=True)
    enrol = sub.add_parser("enrol", help="claim the reader (the code on stdin)")
    enrol.add_argument("--hostname", default="bus-reader")
    enrol.add_argument("--cloud", default=CLOUD_URL)
    sub.add_parser("denylist", help="pull the deny-list and the QR key")
    read = sub.add_parser("tap", help="a rider boards: check the QR offline, keep the tap")
    read.add_argument("qr")
    read.add_argument("--stop", required=True)
    read.add_argument("--at", type=float, default=None, help="unix seconds (default: now)")
    sub.add_parser("upload", help="send the backlog as one signed batch")
    sub.add_parser("resend", help="send the last batch again")
    args = parser.parse_args(argv)
    reader = BusReader(args.state, args.ca)
    try:
        if args.command == "enrol":
            code = sys.stdin.readline().strip()
            answer: dict[str, Any] = {"device_id": reader.enrol(code, args.hostname, args.cloud)}
        elif args.command == "denylist":
            answer = reader.pull_denylist()
        elif args.command == "tap":
            answer = reader.read(args.qr, args.stop, args.at)
        elif args.command == "upload":
            answer = reader.upload()
        else:
            answer = reader.resend()
    except ReaderError as exc:
        print(f"transit reader: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
