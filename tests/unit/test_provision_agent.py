"""plaza-provision-agent on the router: apply-config wires check-config, restart and the
rollout; check prints one JSON line per router-local check. Runs in-process with the
commands it would call replaced by small scripts on PATH."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from provisioning import agent, checks, errors

GOOD = '[lan]\ninterface = "lo"\n[gateway]\nstate_dir = "{state}"\n'


def script(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A root with /etc/plaza/gateway.toml, and plaza-gateway/nft/systemctl stand-ins that
    log their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    script(
        bin_dir,
        "plaza-gateway",
        f'echo "gateway $*" >> {log}\n'
        'grep -q bad "$2" && { echo "plaza-gateway: [lan] bad" >&2; exit 2; }; exit 0',
    )
    script(bin_dir, "systemctl", f'echo "systemctl $*" >> {log}')
    script(bin_dir, "nft", "exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    root = tmp_path / "root"
    (root / "etc/plaza").mkdir(parents=True)
    (root / "etc/plaza/gateway.toml").write_text("# old\n")
    return root


def test_apply_config_without_a_cloud_installs_and_restarts(router: Path, tmp_path, capsys):
    new = tmp_path / "new.toml"
    new.write_text(GOOD.format(state=tmp_path / "state"))
    code = agent.main(["--root", str(router), "apply-config", str(new), "--timeout", "5"])
    assert code == errors.OK
    assert (router / "etc/plaza/gateway.toml").read_text() == new.read_text()
    assert (router / "etc/plaza/gateway.toml.previous").read_text() == "# old\n"
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["applied"] is True and "no cloud URL" in answer["message"]
    log = (tmp_path / "log").read_text().splitlines()
    assert log == [
        f"gateway --config {new} check-config",
        "systemctl restart plaza-gateway plaza-portal plaza-dnsmasq",
    ]


def test_apply_config_refused_by_check_config_keeps_the_old(router: Path, tmp_path, capsys):
    new = tmp_path / "new.toml"
    new.write_text("bad\n")
    code = agent.main(["--root", str(router), "apply-config", str(new)])
    assert code == errors.CONFIG_REFUSED
    assert (router / "etc/plaza/gateway.toml").read_text() == "# old\n"
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["exit"] == 5 and "fails check-config: plaza-gateway: [lan] bad" in answer["error"]
    assert "systemctl" not in (tmp_path / "log").read_text()


def test_apply_config_rolls_back_when_the_cloud_is_silent(router, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(agent, "cloud_probe", lambda *a: lambda: False)
    monkeypatch.setattr(agent.time, "sleep", lambda s: None)
    ticks = iter(range(0, 1000, 1))
    monkeypatch.setattr(agent.time, "monotonic", lambda: float(next(ticks)))
    new = tmp_path / "new.toml"
    new.write_text(GOOD.format(state=tmp_path / "state"))
    code = agent.main(
        [
            "--root",
            str(router),
            "apply-config",
            str(new),
            "--timeout",
            "5",
            "--cloud",
            "http://127.0.0.1:9",
        ]
    )
    assert code == errors.CONFIG_REFUSED
    assert (router / "etc/plaza/gateway.toml").read_text() == "# old\n"
    restarts = [x for x in (tmp_path / "log").read_text().splitlines() if "restart" in x]
    assert len(restarts) == 2


def test_cloud_probe_before_enrolment_is_any_http_answer(tmp_path: Path) -> None:
    # Nothing listens on port 9 of the loopback: refused, so not reached.
    assert agent.cloud_probe("http://127.0.0.1:9", tmp_path, "")() is False


def test_check_prints_json_lines_with_reasons(router: Path, tmp_path, capsys) -> None:
    (router / "etc/plaza/gateway.toml").write_text(GOOD.format(state=tmp_path / "state"))
    assert agent.main(["--root", str(router), "check"]) == errors.OK
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    by = {x["check"]: x for x in lines}
    assert by["config"]["status"] == "ok"
    assert by["nft"]["status"] == "fail" and "journalctl -u plaza-gateway" in by["nft"]["reason"]
    assert (
        by["dhcp-option-114"]["status"] == "fail" and "cert_file" in by["dhcp-option-114"]["reason"]
    )
    assert by["portal-https"]["status"] == "fail"
    assert by["enrolled"]["status"] == "fail" and "claim code" in by["enrolled"]["reason"]
    (tmp_path / "state").mkdir()
    (tmp_path / "state/cloud.json").write_text('{"device_id": "dev_1", "venue_id": "v1"}')
    capsys.readouterr()
    agent.main(["--root", str(router), "check"])
    enrolled = [json.loads(x) for x in capsys.readouterr().out.splitlines()][-1]
    assert enrolled["status"] == "ok" and "device dev_1 of venue v1" in enrolled["reason"]


def test_check_of_a_broken_config_is_one_failed_line(router: Path, capsys) -> None:
    (router / "etc/plaza/gateway.toml").write_text("[lan\n")
    agent.main(["--root", str(router), "check"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (
        len(lines) == 1 and lines[0]["status"] == "fail" and "not valid TOML" in lines[0]["reason"]
    )


def test_udp_listening_reads_proc_net_udp(tmp_path: Path) -> None:
    table = tmp_path / "udp"
    table.write_text("  sl  local_address rem_address   st\n   0: 00000000:0043 00000000:0000 07\n")
    assert checks.udp_listening(67, (str(table),))
    assert not checks.udp_listening(53, (str(table),))


def test_boot_check_restores_an_unconfirmed_config(router: Path, capsys) -> None:
    live = router / "etc/plaza/gateway.toml"
    assert agent.main(["--root", str(router), "boot-check"]) == errors.OK
    assert json.loads(capsys.readouterr().out)["recovered"] is False
    (router / "etc/plaza/gateway.toml.previous").write_text("# old\n")
    live.write_text("# on trial\n")
    (router / "etc/plaza/gateway.toml.pending").write_text("x\n")
    assert agent.main(["--root", str(router), "boot-check"]) == errors.OK
    assert json.loads(capsys.readouterr().out)["recovered"] is True
    assert live.read_text() == "# old\n"


@pytest.fixture
def portal_tls(tmp_path: Path):
    """A TLS server on 127.0.0.1 with a lab CA's certificate for portal.cafe.test."""
    import socket
    import ssl
    import threading
    from types import SimpleNamespace

    from lab.pki import LabCA

    ca = LabCA(tmp_path / "ca")
    cert, key = ca.issue("portal", ["portal.cafe.test"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    threading.Thread(target=serve, daemon=True).start()

    def config(hostname: str = "portal.cafe.test", cert_file: str = str(cert)):
        return SimpleNamespace(
            portal=SimpleNamespace(
                hostname=hostname, https_port=listener.getsockname()[1], cert_file=cert_file
            ),
            lan=SimpleNamespace(ip="127.0.0.1"),
        )

    yield config, str(ca.cert_path)
    stop.set()
    listener.close()


def test_portal_https_verifies_chain_and_name(portal_tls) -> None:
    config, ca = portal_tls
    ok = checks.tls_check(config(), ca)
    assert ok["status"] == "ok" and ok["reason"].startswith("portal.cafe.test verified")
    # Phones do not trust a lab CA: neither does the check without --portal-ca.
    untrusted = checks.tls_check(config())
    assert untrusted["status"] == "fail" and "does not verify" in untrusted["reason"]
    wrong = checks.tls_check(config(hostname="other.cafe.test"), ca)
    assert wrong["status"] == "fail" and "other.cafe.test" in wrong["reason"]
    assert "Hostname mismatch" in wrong["reason"] or "match" in wrong["reason"]
    nothing = checks.tls_check(config(cert_file=""), ca)
    assert nothing["status"] == "fail" and "HTTP only" in nothing["reason"]


def test_portal_https_without_an_answer_says_what_to_check(portal_tls) -> None:
    config, ca = portal_tls
    closed = config()
    closed.portal.https_port = 9  # discard: nothing listens on the loopback
    line = checks.tls_check(closed, ca, timeout=2)
    assert line["status"] == "fail" and "systemctl status plaza-portal" in line["reason"]


def test_dhcp_option_114_check_reads_what_dnsmasq_was_started_with(tmp_path: Path) -> None:
    from types import SimpleNamespace

    url = "https://portal.cafe.test/captive-portal/api"
    config = SimpleNamespace(portal=SimpleNamespace(api_url=url))
    conf = tmp_path / "plaza-dnsmasq.conf"

    def check(listening: bool = True) -> dict[str, str]:
        return checks.dhcp_check(config, conf, lambda port: listening and port == 67)

    assert "plaza-dnsmasq has not started" in check()["reason"]
    conf.write_text("dhcp-range=198.19.0.10,198.19.0.200\n")
    assert "older config: systemctl restart plaza-dnsmasq" in check()["reason"]
    conf.write_text(f'dhcp-option-force=114,"{url}"\n')
    assert "nothing listens on UDP 67" in check(listening=False)["reason"]
    ok = check()
    assert ok["status"] == "ok" and url in ok["reason"] and "no DHCP exchange" in ok["reason"]
    http_only = SimpleNamespace(portal=SimpleNamespace(api_url="http://portal.cafe.test/api"))
    assert "no certificate" in checks.dhcp_check(http_only, conf)["reason"]
