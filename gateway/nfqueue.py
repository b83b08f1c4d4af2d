"""An NFQUEUE read on the daemon's asyncio loop: bound once, read when readable, unbound on
close. The walled-garden inspector (gateway/garden_queue.py) and the station detector
(gateway/detect.py) each subclass it with what they do per packet."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from typing import Any

from gateway.logs import RateLimitedLog


class LoopQueue:
    """One NFQUEUE number on the loop: one thread, no locks; `on_packet` gives the verdict."""

    def __init__(self, num: int, max_len: int, copy_range: int, reasons: RateLimitedLog) -> None:
        from netfilterqueue import NetfilterQueue

        self.num = num
        self.reasons = reasons
        self.queue = NetfilterQueue()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rcvbuf capped by rmem_max: fine
            self.queue.bind(num, self.on_packet, max_len=max_len, range=copy_range)
        self.loop: asyncio.AbstractEventLoop | None = None

    def on_packet(self, packet: Any) -> None:
        raise NotImplementedError

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.queue.get_fd(), self._readable)

    def _readable(self) -> None:
        try:
            self.queue.run(block=False)
        except OSError as exc:  # the socket overran or went away: log, keep serving
            self.reasons.note("queue-error", "NFQUEUE %d receive failed: %s", self.num, exc)

    def close(self) -> None:
        if self.loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self.queue.get_fd())
        self.queue.unbind()
