"""Commands for routers: a closed list of operations, each signed by the cloud key.

There is no generic "run this" op and never will be: a command is data the router's own code
interprets (docs/cloud-protocol.md). Arguments are checked at issue time, so a bad command is
refused to the operator rather than by a router later. Delivery is a pull: the router's long
poll reads pending commands from the database, so any instance can answer it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import Command, Device, new_id
from plaza import signing
from plaza.validators import MAC_RE

OPS = ("authorize", "kick", "refresh-config")
MAX_MINUTES = 7 * 1440
DEFAULT_TTL = 300


class CommandError(ValueError):
    """A command that cannot be issued; str() says why."""


def _client(args: dict[str, Any]) -> str:
    client = args.get("client")
    if isinstance(client, str):
        if MAC_RE.match(client.lower()):
            return client.lower()
        try:
            return str(ipaddress.ip_address(client))
        except ValueError:
            pass
    raise CommandError(f"client must be a MAC or an IP address, got {client!r}")


def check_args(op: str, args: Any) -> dict[str, Any]:
    """The arguments normalised, or CommandError (unknown op, missing or extra argument)."""
    if op not in OPS:
        raise CommandError(f"unknown op {op!r}: expected one of {', '.join(OPS)}")
    if not isinstance(args, dict):
        raise CommandError("args must be an object")
    allowed = {"authorize": {"client", "minutes"}, "kick": {"client"}, "refresh-config": set()}
    if extra := set(args) - allowed[op]:
        raise CommandError(f"{op}: unexpected argument {sorted(extra)[0]!r}")
    if op == "refresh-config":
        return {}
    checked: dict[str, Any] = {"client": _client(args)}
    if "minutes" in args:
        minutes = args["minutes"]
        if isinstance(minutes, bool) or not isinstance(minutes, int):
            raise CommandError("minutes must be an integer")
        if not 1 <= minutes <= MAX_MINUTES:
            raise CommandError(f"minutes must be from 1 to {MAX_MINUTES}")
        checked["minutes"] = minutes
    return checked


def issue(
    db: Session,
    key: Ed25519PrivateKey,
    device_id: str,
    op: str,
    args: dict[str, Any],
    now: float,
    ttl: int = DEFAULT_TTL,
) -> Command:
    """Create and sign a command; the caller commits."""
    checked = check_args(op, args)
    device = db.get(Device, device_id)
    if device is None or device.revoked:
        raise CommandError(f"no active device {device_id}")
    if not 1 <= ttl <= 86400:
        raise CommandError("ttl must be from 1 s to one day")
    body = {
        "id": new_id("cmd"), "op": op, "args": checked, "device_id": device_id,
        "issued_at": int(now), "expires_at": int(now) + ttl,
    }  # fmt: skip
    command = Command(
        id=body["id"], device_id=device_id, op=op, args=checked, issued_at=body["issued_at"],
        expires_at=body["expires_at"], signed=signing.sign_command(key, body),
    )  # fmt: skip
    db.add(command)
    db.flush()
    return command


def pending(db: Session, device_id: str, now: float) -> list[dict[str, Any]]:
    """What the device should receive: no result yet, not expired; oldest first."""
    rows = db.scalars(
        select(Command)
        .where(Command.device_id == device_id, Command.done_at.is_(None), Command.expires_at > now)
        .order_by(Command.issued_at, Command.id)
    )
    return [row.signed for row in rows]


def record_result(db: Session, device_id: str, command_id: str, body: Any, now: float) -> bool:
    """Store a command's outcome (ends its delivery). False: no such command for this
    device. A repeated result is accepted and changes nothing (the router may resend)."""
    command = db.get(Command, command_id)
    if command is None or command.device_id != device_id:
        return False
    if command.done_at is None:
        command.ok = bool(body["ok"])
        command.error = body.get("error")
        command.done_at = now
    return True
