"""Signed commands from the cloud: checked, run at most once, their results reported.

Why commands are checked here although the channel is TLS: the router pins the cloud's key at
enrolment and obeys only what that key signed, for this device, unexpired, from a closed list
of operations. There is no operation that runs a program.

Why results are remembered: a command whose result was lost on the way back is delivered
again; it is answered again from memory, never run twice.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway.uplink.identity import ID_RE, UplinkError
from gateway.uplink.transport import MAX_ERROR, Refused, Transport, error
from plaza import signing

log = logging.getLogger("plaza.uplink")

OPS = ("authorize", "kick", "refresh-config")  # closed: nothing else is ever executed
LONG_POLL = 25  # seconds the cloud may hold a command poll
COMMANDS_LIMIT = 1 << 20  # one poll's commands, ~0.5 kB each signed: some 2,000
DONE_MEMORY = 4096  # at most this many results kept (each until its command expires)

Execute = Callable[[dict[str, Any]], dict[str, Any]]


class CommandRefused(ValueError):
    """A command the router will not execute; str() says why."""


class Commands:
    """The command half of the uplink. `execute` runs a control request on the gateway
    (gateway/uplink/start.py `on_loop`); `refresh` pulls the venue config now, raising
    UplinkError if it cannot; `stats` is the uplink's counters, shared."""

    def __init__(
        self,
        transport: Transport,
        stats: dict[str, float],
        refresh: Callable[[], Any],
        execute: Execute | None = None,
    ) -> None:
        self.transport, self.stats, self.refresh, self.execute = transport, stats, refresh, execute
        # Results of executed commands, kept until the command expires, so a redelivered
        # command (its result was lost) is answered again, never run again.
        self._done: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def check(self, command: Any) -> None:
        """Raise CommandRefused unless `command` is one this router may execute: signed by
        the pinned cloud key, for this device, not expired, an op from the closed list with
        exactly the arguments it takes."""
        if not isinstance(command, dict):
            raise CommandRefused("not a JSON object")
        identity = self.transport.identity
        try:
            signing.verify_command(signing.load_public(identity.cloud_public_key), command)
        except signing.SignatureError:
            raise CommandRefused("bad signature") from None
        if command.get("device_id") != identity.device_id:
            raise CommandRefused("for another device")
        expires = command.get("expires_at")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise CommandRefused("no expiry")
        if expires <= self.transport.now():
            raise CommandRefused("expired")
        op, args = command.get("op"), command.get("args")
        if op not in OPS:
            raise CommandRefused(f"op {str(op)[:40]!r} is not one of {', '.join(OPS)}")
        if not isinstance(args, dict):
            raise CommandRefused("args must be an object")
        allowed = {"authorize": {"client", "minutes"}, "kick": {"client"}}.get(op, set())
        if set(args) - allowed:
            raise CommandRefused(f"{op} takes no {', '.join(sorted(set(args) - allowed))}")
        if op in ("authorize", "kick"):
            client = args.get("client")
            if not isinstance(client, str) or not 0 < len(client) <= 64:
                raise CommandRefused(f"{op} needs a client (MAC or IP)")
        minutes = args.get("minutes")
        if minutes is not None and (
            isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1
        ):
            raise CommandRefused("minutes must be a positive integer")

    def _run(self, command: dict[str, Any]) -> dict[str, Any]:
        """Execute a checked command; the result as the cloud is told it."""
        op, args = command["op"], command["args"]
        if op == "refresh-config":
            try:
                self.refresh()
            except UplinkError as exc:
                return {"ok": False, "error": f"config pull failed: {exc}"}
            return {"ok": True}
        if self.execute is None:
            return {"ok": False, "error": "this uplink has no gateway to execute on"}
        if op == "authorize":
            request = {"op": "auth", "client": args["client"]}
            if "minutes" in args:
                request["minutes"] = args["minutes"]
        else:
            request = {"op": "deauth", "client": args["client"], "reason": "admin"}
        try:
            answer = self.execute(request)
        except Exception as exc:
            log.warning("command %s: the gateway did not answer: %r", command["id"], exc)
            return {"ok": False, "error": "the gateway did not answer"}
        if answer.get("ok") is True:
            return {"ok": True}
        return {"ok": False, "error": str(answer.get("error") or "failed")[:MAX_ERROR]}

    def handle(self, command: Any) -> dict[str, Any] | None:
        """Check, execute (at most once) and report one command; returns the result posted
        (None for a refused command without a usable id to report it under)."""
        cid = command.get("id") if isinstance(command, dict) else None
        cid = cid if isinstance(cid, str) and ID_RE.fullmatch(cid) else None
        now = self.transport.now()
        while self._done and (
            len(self._done) > DONE_MEMORY or next(iter(self._done.values()))[0] < now
        ):
            self._done.popitem(last=False)  # oldest first; expired ones are never delivered
        if cid is not None and cid in self._done:
            result = self._done[cid][1]  # redelivered: our result was lost; never run twice
        else:
            try:
                self.check(command)
                if cid is None:
                    raise CommandRefused("malformed id")
            except CommandRefused as exc:
                self.stats["commands_refused"] += 1
                log.warning("command %s refused: %s", cid or "(no id)", exc)
                if cid is None:
                    return None
                result = {"ok": False, "error": f"refused by the router: {exc}"}
            else:
                result = self._run(command)
                self.stats["commands_executed" if result["ok"] else "commands_failed"] += 1
                log.info(
                    "command %s %s %s: %s", cid, command["op"], command["args"].get("client", ""),
                    "ok" if result["ok"] else result.get("error"),
                )  # fmt: skip
                self._done[cid] = (float(command["expires_at"]), result)
        resp = self.transport.signed("POST", f"/device/commands/{cid}/result", result)
        if resp.status_code not in (200, 404, 409, 410):
            # 404/409/410: the cloud no longer wants this result (unknown, done or expired).
            raise Refused(resp.status_code, f"command result refused: {error(resp)}")
        return result

    def poll(self, wait: int = LONG_POLL) -> list[dict[str, Any] | None]:
        """One long poll; every command it brings is handled. Returns the results posted."""
        resp = self.transport.signed(
            "GET", f"/device/commands?wait={wait}", read_timeout=wait + 15, limit=COMMANDS_LIMIT
        )
        if resp.status_code != 200:
            raise Refused(resp.status_code, f"command poll refused: {error(resp)}")
        try:
            commands = resp.json()["commands"]
            if not isinstance(commands, list):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise Refused(200, "command poll answer not understood") from None
        return [self.handle(c) for c in commands]
