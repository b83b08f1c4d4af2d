"""Which Web Push endpoints the cloud may POST to, and a transport that connects only there.

A browser's subscription names the URL the cloud will POST to, and the subscriber chooses it:
without a check, `https://127.0.0.1:6379/`, `https://169.254.169.254/` or a name resolving to
10.x would make the push worker a blind request forger inside the cloud's network. Real push
services (FCM, Mozilla autopush, Apple, WNS) are public host names, so the rule is:

- the host must be a name, not an IP literal (nor a number a resolver reads as one);
- every address the name resolves to must be public (`is_global`, not multicast; IPv6 forms
  that embed an IPv4 address are judged by that address);
- unless it lies in `allowed_networks` (the setting PUSH_ALLOWED_NETWORKS, empty by default):
  the lab's and tests' stand-in push service runs on 127.0.0.1, 198.18.x.x or 2001:db8::, and
  is let in explicitly there rather than by weakening the default. An IP literal inside an
  allowed network is accepted too.

It is checked when a browser subscribes (a clear 400) and again for every send, because DNS
can change in between. A check followed by a second lookup at connect time would be open to
DNS rebinding (public for the check, 127.0.0.1 for the connect), so `PinnedAdapter` resolves
once, checks, and connects to that very address, keeping the name for the Host header, SNI
and certificate verification. Redirects are never followed (max_redirects 0 on the session).

The resolver is a collaborator (`Resolver`): tests pass a table, never real DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from plaza.wallet import http

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host name, port) -> the addresses it resolves to, as strings; OSError when it does not.
Resolver = Callable[[str, int], Sequence[str]]

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
PIN_ATTR = "_plaza_pinned_address"


class EndpointRefused(Exception):
    """A push endpoint the cloud will not contact; str() says why, in one line.
    `temporary` means the name did not resolve (try again later), not that it is forbidden."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


def system_resolver(host: str, port: int) -> list[str]:
    """The machine's resolver (getaddrinfo), TCP addresses only, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_networks(value: str | Iterable[str]) -> tuple[Network, ...]:
    """PUSH_ALLOWED_NETWORKS: CIDRs separated by commas or spaces (or a list of them).
    ValueError names the entry that is not one."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError(f"not a network (CIDR): {item!r}") from None
    return tuple(networks)


def _embedded_v4(address: Address) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def is_public(address: Address) -> bool:
    inner = _embedded_v4(address)
    if inner is not None:
        return is_public(inner)
    return address.is_global and not address.is_multicast


def _looks_numeric(host: str) -> bool:
    """A host a resolver would read as an IPv4 address (`2130706433`, `0x7f.1`, `127.1`):
    WHATWG's rule, a last label that is a number."""
    last = host.rstrip(".").rsplit(".", 1)[-1]
    return last.isdigit() or (last[:2] == "0x" and all(c in "0123456789abcdef" for c in last[2:]))


class EndpointGuard:
    """The rule above: `check(url)` at subscribe time, `resolve(host, port)` at connect time."""

    def __init__(
        self, allowed_networks: Iterable[Network] = (), resolver: Resolver = system_resolver
    ) -> None:
        self.allowed = tuple(allowed_networks)
        self.resolver = resolver

    def allows(self, address: Address) -> bool:
        return any(address in net for net in self.allowed) or is_public(address)

    def check(self, url: str) -> str:
        """The address a POST to `url` would go to now; EndpointRefused if none may."""
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError:
            raise EndpointRefused("the endpoint is not a valid URL") from None
        if parts.scheme != "https" or not parts.hostname:
            raise EndpointRefused("the endpoint must be an https:// URL with a host")
        return self.resolve(parts.hostname, port)

    def resolve(self, host: str, port: int) -> str:
        try:
            literal: Address | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            if any(literal in net for net in self.allowed):
                return str(literal)
            raise EndpointRefused("the endpoint's host is an IP address; a push service has a name")
        if _looks_numeric(host):
            raise EndpointRefused("the endpoint's host is a number, not a name")
        try:
            found = list(self.resolver(host, port))
        except (OSError, UnicodeError):
            raise EndpointRefused("the endpoint's host does not resolve", temporary=True) from None
        addresses = []
        for text in found:
            try:
                addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                raise EndpointRefused("the endpoint's host resolves to a non-address") from None
        if not addresses:
            raise EndpointRefused("the endpoint's host does not resolve", temporary=True)
        # Every address must pass: the connection could go to any of them.
        if not all(self.allows(a) for a in addresses):
            raise EndpointRefused("the endpoint's host resolves to a non-public address")
        return str(addresses[0])


class PinnedAdapter(HTTPAdapter):
    """Resolves each request's host through the guard, and connects to the address that
    passed: the URL keeps the name, so the Host header, SNI and the certificate check are
    the name's, while the socket goes to the checked address and nowhere else."""

    def __init__(self, guard: EndpointGuard, **kw: Any) -> None:
        self.guard = guard
        super().__init__(**kw)

    def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        if parts.scheme != "https" or not parts.hostname:
            raise EndpointRefused("the endpoint must be an https:// URL with a host")
        setattr(request, PIN_ATTR, self.guard.resolve(parts.hostname, parts.port or 443))
        # urllib3 would otherwise name the pinned address in Host; the service expects its name.
        request.headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        return super().send(request, *args, **kw)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        pinned = getattr(request, PIN_ATTR, None)
        if pinned is None:  # only send() sets it; a request that skipped it goes nowhere
            raise EndpointRefused("the endpoint was not checked")
        name = host_params["host"]
        host_params["host"] = pinned
        pool_kwargs["server_hostname"] = name  # SNI and certificate: the name, not the IP
        pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs


def guarded_session(ca_file: str, guard: EndpointGuard) -> requests.Session:
    """A session for push services: the wallet client's settings (no proxies from the
    environment, no redirects) and every https connection through the guard."""
    session = http.new_session(ca_file)
    session.mount("https://", PinnedAdapter(guard))
    session.mount("http://", PinnedAdapter(guard))  # refuses: push endpoints are https only
    return session


def is_guarded(session: requests.Session, url: str) -> bool:
    try:
        return isinstance(session.get_adapter(url), PinnedAdapter)
    except requests.exceptions.InvalidSchema:
        return False
