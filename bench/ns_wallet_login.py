"""One phone of join_storm.py, run in the phone's namespace: DHCP, wallet login, online.

Started before the storm with its settings as one JSON argument; imports, the TLS context and
everything else that costs Python time are ready before it prints "ready". On the line "go"
on stdin it runs the lab's DHCP client in the foreground (`udhcpc -q`, which exits once the
lease is bound and the lab's udhcpc.sh has configured the address and resolv.conf): that exit
is the phone's lease time. Then it logs in as a browser would, over HTTPS with the stdlib:

    GET  https://<portal>/login/wallet             302 -> https://wallet.test/authorize?...
    GET  the wallet's authorize URL                200, the consent form (login, PIN, CSRF)
    POST login + PIN + approve + CSRF token        302 -> https://<portal>/login/callback?...
    GET  the callback                              303 -> /welcome
    GET  /welcome                                  200, naming the signed-in shopper
    GET  http://www.example.test/ (new connection each time, every 20 ms) until
         200 with FAKE-INTERNET-OK: the phone is online

Names are resolved by the phone's own resolver (the router's dnsmasq, as DHCP said; IPv4 only,
as the lab has no IPv6 service), so the walled garden's DNS-driven sets are exercised as on a
real phone. Redirects are followed by hand and only to the host each step expects; cookies are
kept per host. Keep-alive connections are reused per host; a reused connection the server
closed is reopened once, as browsers do. Prints one JSON line: the monotonic time of each step
(CLOCK_MONOTONIC is one clock across namespaces) and the time spent resolving names,
connecting and in TLS handshakes; or the step that failed and why. The HTTP client is the
stdlib's; the login's steps are the lab's (lab/shopper.py, as the demo and the netns tests
take them), which import nothing but the stdlib themselves.
"""

from __future__ import annotations

import contextlib
import html
import http.client
import json
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import time
from urllib.parse import urlencode, urlsplit

from lab import shopper
from lab.shopper import ShopperError
from lab.wallet.app import WalletAppError

FORM_RE = re.compile(r'<form method="post" action="([^"]*)" data-wallet-user="([^"]*)">')
ONLINE_MARK = "FAKE-INTERNET-OK"
POLL_SECONDS = 0.02
REUSE_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Failed(Exception):
    def __init__(self, step: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{step}: {reason}")
        self.step, self.reason, self.detail = step, reason, detail


class Answer:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: str) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")


class Timed:
    """Seconds a phone spent resolving names, opening TCP connections and in TLS handshakes."""

    def __init__(self) -> None:
        self.dns = self.tcp = self.tls = 0.0
        self.connections = 0

    def open(self, host: str, port: int, timeout: float) -> socket.socket:
        t0 = time.monotonic()
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        t1 = time.monotonic()
        sock = socket.create_connection(infos[0][4][:2], timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dns += t1 - t0
        self.tcp += time.monotonic() - t1
        self.connections += 1
        return sock


class Conn(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, timed: Timed) -> None:
        super().__init__(host, port, timeout=timeout)
        self.timed = timed

    def connect(self) -> None:
        self.sock = self.timed.open(self.host, self.port, self.timeout)


class TLSConn(http.client.HTTPSConnection):
    def __init__(
        self, host: str, port: int, timeout: float, timed: Timed, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.timed = timed

    def connect(self) -> None:
        sock = self.timed.open(self.host, self.port, self.timeout)
        t0 = time.monotonic()
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        finally:
            self.timed.tls += time.monotonic() - t0


class Browser:
    """Keep-alive connections and cookies per host; nothing followed automatically."""

    def __init__(self, context: ssl.SSLContext, deadline: float) -> None:
        self.context = context
        self.deadline = deadline
        self.conns: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self.used: set[tuple[str, str, int]] = set()
        self.cookies: dict[str, dict[str, str]] = {}
        self.reopened = 0
        self.timed = Timed()

    def timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("out of time")
        return min(left, 10.0)

    def _conn(self, key: tuple[str, str, int]) -> http.client.HTTPConnection:
        conn = self.conns.get(key)
        if conn is None:
            scheme, host, port = key
            if scheme == "https":
                conn = TLSConn(host, port, self.timeout(), self.timed, self.context)
            else:
                conn = Conn(host, port, self.timeout(), self.timed)
            self.conns[key] = conn
            self.used.discard(key)
        return conn

    def request(
        self, method: str, url: str, form: dict[str, str] | None = None, keep: bool = True
    ) -> Answer:
        parts = urlsplit(url)
        host = parts.hostname or ""
        key = (parts.scheme, host, parts.port or (443 if parts.scheme == "https" else 80))
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers = {"User-Agent": "plaza-bench join_storm", "Accept": "text/html"}
        jar = self.cookies.get(host)
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if not keep:
            headers["Connection"] = "close"
        for attempt in (1, 2):
            conn = self._conn(key)
            reused = key in self.used
            try:
                conn.timeout = self.timeout()
                if conn.sock is not None:
                    conn.sock.settimeout(conn.timeout)
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read().decode("utf-8", errors="replace")
            except REUSE_ERRORS:
                self.drop(key)
                if reused and attempt == 1:
                    self.reopened += 1
                    continue
                raise
            except BaseException:
                self.drop(key)
                raise
            self.used.add(key)
            if not keep or response.will_close:
                self.drop(key)
            self._store_cookies(host, response.headers.get_all("Set-Cookie") or [])
            return Answer(response.status, response.headers, data)
        raise AssertionError("unreachable")

    def drop(self, key: tuple[str, str, int]) -> None:
        conn = self.conns.pop(key, None)
        self.used.discard(key)
        if conn is not None:
            conn.close()

    def _store_cookies(self, host: str, lines: list[str]) -> None:
        jar = self.cookies.setdefault(host, {})
        for line in lines:
            first, *attrs = (part.strip() for part in line.split(";"))
            name, _, value = first.partition("=")
            low = [a.lower().replace(" ", "") for a in attrs]
            gone = "max-age=0" in low or any(a.startswith("expires=thu,01jan1970") for a in low)
            if gone or not value:
                jar.pop(name, None)
            else:
                jar[name] = value

    def close(self) -> None:
        for key in list(self.conns):
            self.drop(key)


def same_page(url: str, other: str) -> bool:
    a, b = urlsplit(url), urlsplit(other)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)


def expect(step: str, answer: Answer, status: int) -> None:
    if answer.status != status:
        where = f" -> {urlsplit(answer.location).path}" if answer.location else ""
        raise Failed(step, f"HTTP {answer.status}{where}", answer.location or answer.body[:200])


def dhcp(cfg: dict, deadline: float) -> str:
    """Run the DHCP client until it is bound; return the leased address."""
    proc = subprocess.Popen(
        cfg["udhcpc"],
        env={**os.environ, **cfg["env"]},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise Failed("dhcp", "no lease in time") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()
        raise Failed("dhcp", f"udhcpc exit {proc.returncode}", tail[-1] if tail else "")
    try:
        with open(cfg["env"]["PLAZA_LEASE"]) as lease:
            return lease.read().strip()
    except OSError as exc:
        raise Failed("dhcp", "no lease file", str(exc)) from None


class Phone:
    """The lab's shopper steps (lab/shopper.py) drive this phone's browser: `get`/`post` as
    lab.wallet.app.Browser asks, each answer marked when it is the one a step waits for (the
    consent page, the callback's redirect), so the storm's table keeps its per-step times."""

    def __init__(self, cfg: dict, browser: Browser, marks: dict[str, float]) -> None:
        self.cfg, self.browser, self.marks = cfg, browser, marks

    def get(self, url: str) -> Answer:
        r = self.browser.request("GET", url)
        if r.status == 200 and same_page(url, self.cfg["authorize"]):
            form = FORM_RE.search(r.body)
            if form and form.group(2):
                raise Failed("consent page", "already signed in on a fresh phone", form.group(2))
            self.marks.setdefault("consent_200", time.monotonic())
        elif r.status == 303 and same_page(url, self.cfg["callback"]):
            self.marks["callback_303"] = time.monotonic()
        return r

    def post(self, url: str, data: dict[str, str]) -> Answer:
        return self.browser.request("POST", url, form=data)


def login(cfg: dict, browser: Browser, marks: dict[str, float]) -> int:
    """The wallet login of demo.py, with the lab's own steps (lab/shopper.py); returns how many
    internet polls it took."""
    portal, phone = cfg["portal"], Phone(cfg, browser, marks)
    authorize_url = shopper.start_login(phone, portal)  # type: ignore[arg-type]
    if not same_page(authorize_url, cfg["authorize"]):
        raise Failed("login/wallet", "redirect to an unexpected page", authorize_url)
    marks["portal_302"] = time.monotonic()

    callback = shopper.approve_login(phone, authorize_url, portal, cfg["user"], cfg["pin"])  # type: ignore[arg-type]
    if not same_page(callback, cfg["callback"]):
        raise Failed("approve", "redirect to an unexpected page", callback)
    if "error=" in urlsplit(callback).query:
        raise Failed("approve", "wallet sent an error back", urlsplit(callback).query[:200])
    marks["approve_302"] = time.monotonic()

    welcome = shopper.finish_login(phone, portal, callback)  # type: ignore[arg-type]
    if html.escape(cfg["name"]) not in welcome.body and cfg["name"] not in welcome.body:
        raise Failed("welcome", "shopper's name not on the page", welcome.body[:200])
    marks["welcome_200"] = time.monotonic()

    polls = 0
    while True:
        polls += 1
        try:
            r = browser.request("GET", cfg["site"], keep=False)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) and time.monotonic() >= browser.deadline:
                raise Failed("online", "still not online at the deadline") from None
            r = Answer(0, http.client.HTTPMessage(), f"{type(exc).__name__}: {exc}")
        if r.status == 200 and ONLINE_MARK in r.body:
            marks["online"] = time.monotonic()
            return polls
        if time.monotonic() + POLL_SECONDS >= browser.deadline:
            raise Failed("online", "still not online at the deadline", f"last: {r.status}")
        time.sleep(POLL_SECONDS)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    context = ssl.create_default_context(cafile=cfg["ca"])
    result: dict = {"phone": cfg["phone"], "ok": False, "marks": {}}
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 0
    marks: dict[str, float] = {"go": time.monotonic()}
    before = resource.getrusage(resource.RUSAGE_SELF)
    deadline = marks["go"] + cfg["budget"]
    browser = Browser(context, deadline)
    try:
        result["ip"] = dhcp(cfg, deadline)
        marks["lease"] = time.monotonic()
        result["polls"] = login(cfg, browser, marks)
        result["ok"] = True
    except Failed as exc:
        result.update(step=exc.step, reason=exc.reason, detail=exc.detail)
    except (OSError, http.client.HTTPException, ssl.SSLError, ShopperError, WalletAppError) as exc:
        step = next(
            (s for s, m in STEPS if m not in marks),
            "online",
        )
        result.update(step=step, reason=type(exc).__name__, detail=str(exc)[:200])
    finally:
        with contextlib.suppress(OSError):
            browser.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    result["cpu_s"] = round(spent, 4)  # this process, from "go" to its report
    result["udhcpc_cpu_s"] = round(children.ru_utime + children.ru_stime, 4)
    result["reopened"] = browser.reopened
    timed = browser.timed
    result["net"] = {"dns_s": round(timed.dns, 5), "tcp_s": round(timed.tcp, 5),
                     "tls_s": round(timed.tls, 5), "connections": timed.connections}  # fmt: skip
    result["marks"] = marks
    print(json.dumps(result), flush=True)
    # Exit only when told (stdin closed): tearing an interpreter down costs CPU that would
    # otherwise land on the phones still logging in.
    sys.stdin.readline()
    os._exit(0)


# The step that follows each mark: an exception before a mark is blamed on that step.
STEPS = (
    ("dhcp", "lease"),
    ("login/wallet", "portal_302"),
    ("consent page", "consent_200"),
    ("approve", "approve_302"),
    ("callback", "callback_303"),
    ("welcome", "welcome_200"),
    ("online", "online"),
)


if __name__ == "__main__":
    raise SystemExit(main())
