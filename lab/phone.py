"""A shopper's phone in the lab: HTTP through curl inside the phone's namespace.

curl is a real client with a real resolver (the phone's resolv.conf from DHCP), so what it sees
is what a phone's browser would see: the gateway's redirect, resets, or the fake internet.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CSRF_RE = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


@dataclass
class Response:
    ok: bool  # curl got an HTTP response at all
    status: int
    headers: dict[str, str]
    body: str
    error: str  # curl's message when it failed (reset, refused, timeout)
    exit_code: int
    seconds: float

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class Phone:
    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._jar = Path(tempfile.mkstemp(prefix=f"{netns}-", suffix=".cookies")[1])

    def close(self) -> None:
        self._jar.unlink(missing_ok=True)

    def prefix(self) -> list[str]:
        """How a command runs on this phone: in its namespace (lab/vagrant_lab.py's phone VMs
        run it over SSH instead)."""
        return ["ip", "netns", "exec", self.netns]

    def run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def request(
        self,
        url: str,
        method: str = "GET",
        data: dict[str, str] | None = None,
        timeout: float = 5.0,
        extra: tuple[str, ...] = (),
    ) -> Response:
        cmd = [
            *self.prefix(),
            "curl", "-sS", "-i", "--max-time", str(timeout), "--connect-timeout", str(timeout),
            "-b", str(self._jar), "-c", str(self._jar),
            "-w", "\n%{time_total}", "-X", method, *extra,
        ]  # fmt: skip
        for key, value in (data or {}).items():
            cmd += ["--data-urlencode", f"{key}={value}"]
        cmd.append(url)
        proc = self.run(cmd, timeout=timeout + 5)
        out, _, took = proc.stdout.rpartition("\n")
        seconds = float(took) if re.fullmatch(r"[\d.]+", took or "") else 0.0
        if proc.returncode != 0 or not out.startswith("HTTP/"):
            return Response(False, 0, {}, "", proc.stderr.strip(), proc.returncode, seconds)
        head, _, body = out.partition("\n\n")  # text mode turned CRLF into LF
        lines = head.split("\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return Response(True, status, headers, body, "", 0, seconds)

    def get(self, url: str, **kw) -> Response:
        return self.request(url, **kw)

    def post(self, url: str, data: dict[str, str], **kw) -> Response:
        return self.request(url, method="POST", data=data, **kw)

    def accept_terms(self, portal_url: str) -> Response:
        """Open the splash page and press "continue" as a shopper would."""
        splash = self.get(portal_url)
        match = CSRF_RE.search(splash.body)
        if not splash.ok or not match:
            raise RuntimeError(f"splash page without a form: {splash.status} {splash.error}")
        return self.post(
            portal_url.rstrip("/") + "/continue", {"csrf_token": match.group(1), "accept": "yes"}
        )

    def logout(self, portal_url: str) -> Response:
        status = self.get(portal_url.rstrip("/") + "/status")
        match = CSRF_RE.search(status.body)
        if not match:
            raise RuntimeError("status page without a logout form")
        return self.post(portal_url.rstrip("/") + "/logout", {"csrf_token": match.group(1)})

    def ping(self, ip: str, count: int = 1, wait: float = 1.0) -> bool:
        proc = self.run(
            [*self.prefix(), "ping", "-n", "-c", str(count), "-W", str(wait), ip],
            timeout=count * wait + 10,
        )
        return proc.returncode == 0
