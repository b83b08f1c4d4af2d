"""How each phone OS decides "captive" or "online" from its connectivity probe.

This is the client side of REFERENCE.md's probe table, used by tests, the demo and the join
storm to play every OS: each probe is an URL plus the OS's own rule for reading the answer.
The gateway never special-cases these hosts; it must simply make every rule below say
"captive" before login (so the sign-in sheet opens) and "online" after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

APPLE_SUCCESS = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"

CAPTIVE, ONLINE, OFFLINE = "captive", "online", "offline"


@dataclass(frozen=True)
class Answer:
    """What the probe got: an HTTP answer, or none at all (reset, refused, timeout)."""

    status: int | None
    body: str = ""
    location: str = ""


def _generate_204(a: Answer) -> str:
    """Android/ChromeOS/Chinese vendors: 204 online; other 200-399 captive, except an empty
    200 or one with 4 bytes or fewer, which Android counts as a failed probe."""
    if a.status is None:
        return OFFLINE
    if a.status == 204:
        return ONLINE
    if a.status == 200 and len(a.body) <= 4:
        return OFFLINE
    return CAPTIVE if 200 <= a.status < 400 else OFFLINE


def _body_is(expected: str) -> Callable[[Answer], str]:
    def rule(a: Answer) -> str:
        if a.status is None:
            return OFFLINE
        if a.status == 200 and a.body.strip() == expected.strip():
            return ONLINE
        return CAPTIVE

    return rule


def _firefox(a: Answer) -> str:
    if a.status is None:
        return OFFLINE
    ok = a.status == 200 and "support.mozilla.org/kb/captive-portal" in a.body
    return ONLINE if ok else CAPTIVE


@dataclass(frozen=True)
class Probe:
    os: str
    url: str
    rule: Callable[[Answer], str]
    user_agent: str = ""


PROBES: tuple[Probe, ...] = (
    Probe("iOS/macOS", "http://captive.apple.com/hotspot-detect.html", _body_is(APPLE_SUCCESS),
          "CaptiveNetworkSupport-443.0.1 wispr"),
    Probe("Android", "http://connectivitycheck.gstatic.com/generate_204", _generate_204),
    Probe("Android (fallback)", "http://www.google.com/gen_204", _generate_204),
    Probe("Android (fallback 2)", "http://play.googleapis.com/generate_204", _generate_204),
    Probe("ChromeOS", "http://www.gstatic.com/generate_204", _generate_204),
    Probe("Windows", "http://www.msftconnecttest.com/connecttest.txt",
          _body_is("Microsoft Connect Test")),
    Probe("Firefox", "http://detectportal.firefox.com/canonical.html", _firefox),
    Probe("Xiaomi", "http://connect.rom.miui.com/generate_204", _generate_204),
    Probe("Huawei", "http://connectivitycheck.platform.hicloud.com/generate_204", _generate_204),
    Probe("Honor", "http://connectivitycheck.platform.hihonorcloud.com/generate_204",
          _generate_204),
    Probe("vivo", "http://wifi.vivo.com.cn/generate_204", _generate_204),
    Probe("OPPO", "http://connectivitycheck.oppomobile.com/generate_204", _generate_204),
    Probe("ColorOS", "http://wifi.coloros.com/generate_204", _generate_204),
    Probe("Samsung", "http://connectivity.samsung.com/generate_204", _generate_204),
    Probe("Qualcomm (CN)", "http://www.qualcomm.cn/generate_204", _generate_204),
)  # fmt: skip

# Android's HTTPS probe runs in parallel with the HTTP one: while captive it must fail (reset),
# not hang, and after login it must validate against the real host's certificate.
ANDROID_HTTPS = Probe("Android (https)", "https://www.google.com/generate_204", _generate_204)

# Windows' DNS check: the name must resolve to exactly this, captive or not (no forged DNS).
WINDOWS_DNS = ("dns.msftncsi.com", "131.107.255.255")
