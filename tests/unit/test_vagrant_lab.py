"""The VM lab's pure parts: the box's metadata and layer, the libvirt network checks, the
launcher's preflight errors, and how a phone VM's commands and addresses are read. The full
run (Vagrant, libvirt, VMs) is `make vm-test`."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from gateway import config as gwconfig
from lab import libvirt, vagrant_box, vagrant_internet, vagrant_lab, vagrant_scenarios, vm_internet

ROOT = Path(__file__).resolve().parents[2]

ISOLATED_BRIDGE = """<network connections='1'><name>plaza-wan</name>
<bridge name='virbr2' stp='on' delay='0'/><mac address='52:54:00:9e:ae:73'/></network>"""
MGMT = """<network><name>plaza-mgmt</name><bridge name='virbr1'/>
<ip address='198.18.100.1' netmask='255.255.255.0'><dhcp>
<range start='198.18.100.1' end='198.18.100.254'/></dhcp></ip></network>"""
NAT = """<network><name>plaza-mgmt</name><forward mode='nat'/><bridge name='virbr0'/>
<ip address='192.168.121.1' netmask='255.255.255.0'><dhcp>
<range start='192.168.121.2' end='192.168.121.254'/></dhcp></ip></network>"""
LAN_WITH_DHCP = """<network><name>plaza-lan</name><bridge name='virbr3'/>
<ip address='198.19.0.2' netmask='255.255.255.0'><dhcp><range start='198.19.0.3'
end='198.19.0.9'/></dhcp></ip></network>"""
MEMINFO = "MemTotal:       24000000 kB\nMemAvailable:   {kb} kB\n"


def test_box_metadata_is_a_libvirt_qcow2_box() -> None:
    meta = vagrant_box.metadata()
    assert meta["provider"] == "libvirt" and meta["format"] == "qcow2"
    assert meta["disks"] == [{"path": "box.img", "format": "qcow2"}]
    assert meta["virtual_size"] == 2


def test_box_vagrantfile_logs_in_as_root_with_the_baked_key() -> None:
    text = vagrant_box.BOX_VAGRANTFILE
    assert 'config.ssh.username = "root"' in text
    assert "config.ssh.insert_key = false" in text


def test_box_digest_follows_the_image_and_the_builder() -> None:
    base = vagrant_box.inputs_digest("abc\n", b"source")
    assert base == vagrant_box.inputs_digest("abc", b"source")  # the stamp's newline
    assert base != vagrant_box.inputs_digest("abd", b"source")
    assert base != vagrant_box.inputs_digest("abc", b"source 2")


def test_box_is_stale_without_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vagrant_box, "IMAGE", tmp_path / "plaza-router.qcow2")
    monkeypatch.setattr(vagrant_box, "IMAGE_INPUTS", tmp_path / "plaza-router.inputs")
    with pytest.raises(vagrant_box.BoxError, match="make router-image"):
        vagrant_box.is_stale()


def test_box_staleness_by_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("IMAGE", "img"), ("IMAGE_INPUTS", "inputs"), ("BOX", "box")):
        monkeypatch.setattr(vagrant_box, name, tmp_path / value)
    monkeypatch.setattr(vagrant_box, "BOX_INPUTS", tmp_path / "box.inputs")
    (tmp_path / "img").write_text("qcow2")
    (tmp_path / "inputs").write_text("digest-1\n")
    assert vagrant_box.is_stale()  # no box yet
    (tmp_path / "box").write_text("box")
    (tmp_path / "box.inputs").write_text(vagrant_box.current_digest() + "\n")
    assert not vagrant_box.is_stale()
    (tmp_path / "inputs").write_text("digest-2\n")  # a new router image
    assert vagrant_box.is_stale()


def test_management_nic_gets_an_address_and_nothing_else() -> None:
    net = vagrant_box.MGMT_NETWORK
    assert f"Path=pci-0000:00:{vagrant_box.MGMT_PCI_SLOT:02x}.0" in net
    for line in ("UseGateway=no", "UseRoutes=no", "UseDNS=no", "DHCP=ipv4"):
        assert line in net
    # After the WAN and LAN slots: the kernel keeps naming those eth0 and eth1.
    assert vagrant_box.WAN_PCI_SLOT < vagrant_box.LAN_PCI_SLOT < vagrant_box.MGMT_PCI_SLOT


def test_vagrantfile_uses_the_box_slots_and_isolated_networks() -> None:
    text = (ROOT / "Vagrantfile").read_text()
    assert f'management_network_pci_slot = "0x{vagrant_box.MGMT_PCI_SLOT:02x}"' in text
    assert f'WAN_SLOT = "0x{vagrant_box.WAN_PCI_SLOT:02x}"' in text
    assert f'LAN_SLOT = "0x{vagrant_box.LAN_PCI_SLOT:02x}"' in text
    assert 'management_network_mode = "none"' in text
    assert 'libvirt__forward_mode: "veryisolated"' in text
    assert "libvirt__dhcp_enabled: false" in text
    assert 'config.vm.box = "plaza/router"' in text
    assert "virtualbox" not in text.lower()


def test_isolated_networks_pass() -> None:
    assert libvirt.network_problems("plaza-wan", ISOLATED_BRIDGE) == []
    assert libvirt.network_problems("plaza-mgmt", MGMT) == []


def test_a_forwarding_network_is_refused() -> None:
    [problem] = libvirt.network_problems("plaza-mgmt", NAT)
    assert "forwards (nat)" in problem and "isolated" in problem


def test_a_lan_with_libvirt_dhcp_is_refused() -> None:
    [problem] = libvirt.network_problems("plaza-lan", LAN_WITH_DHCP)
    assert "bare bridge" in problem


def test_management_without_dhcp_is_refused() -> None:
    [problem] = libvirt.network_problems("plaza-mgmt", ISOLATED_BRIDGE)
    assert "no DHCP" in problem


def test_preflight_missing_libvirt_says_what_to_install(tmp_path: Path) -> None:
    def which(tool: str) -> str | None:
        return None if tool == "libvirtd" else f"/usr/bin/{tool}"

    message = libvirt.check_tools(which=which, gems=tmp_path)
    assert message is not None and "libvirt-daemon-system" in message
    assert "\n" not in message


def test_preflight_missing_plugin(tmp_path: Path) -> None:
    message = libvirt.check_tools(which=lambda tool: f"/usr/bin/{tool}", gems=tmp_path)
    assert message is not None and "apt-get install vagrant-libvirt" in message
    (tmp_path / "vagrant-libvirt-0.11.2").mkdir()
    assert libvirt.check_tools(which=lambda tool: f"/usr/bin/{tool}", gems=tmp_path) is None


def test_preflight_memory() -> None:
    enough = MEMINFO.format(kb=8 * 1024 * 1024)
    assert libvirt.check_memory(3, enough) is None
    short = libvirt.check_memory(3, MEMINFO.format(kb=1024 * 1024))
    assert short is not None and "too little memory" in short and "PLAZA_PHONES" in short
    assert "MemAvailable" in (libvirt.check_memory(1, "MemTotal: 1 kB\n") or "")


def test_preflight_stale_box() -> None:
    assert libvirt.check_box(stale=False) is None
    assert "make vagrant-box" in (libvirt.check_box(stale=True) or "")


def test_kvm_probe_without_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libvirt.os, "access", lambda path, mode: False)
    assert libvirt.kvm_usable(tmp_path / "vmlinuz") is False


def test_domifaddr_and_bridge_parsing() -> None:
    out = (
        " Name       MAC address          Protocol     Address\n"
        "-------------------------------------------------------\n"
        " vnet2      52:54:00:17:bc:62    ipv4         198.18.100.104/24\n"
    )
    assert vagrant_lab.parse_domifaddr(out) == "198.18.100.104"
    assert vagrant_lab.parse_domifaddr(out.splitlines()[0]) is None
    assert vagrant_lab.parse_bridge("Name:           plaza-wan\nBridge:         virbr2\n") == (
        "virbr2"
    )
    with pytest.raises(vagrant_lab.VMLabError, match="plaza-lab vm up"):
        vagrant_lab.parse_bridge("Name: plaza-wan\n")


def test_venue_config_is_a_valid_router_config(tmp_path: Path) -> None:
    """The Vagrant lab flashes lab/vm_internet.py's venue config, with usage every second."""
    text = vm_internet.VMInternet("ns", tmp_path).venue_config(quick_usage=True)
    config = gwconfig.from_dict(tomllib.loads(text))
    assert config.portal.url == vagrant_lab.PORTAL_URL
    assert config.portal.api_url == vagrant_lab.API_URL
    assert config.cloud.ca_bundle == vm_internet.ROUTER_CA
    assert config.lan.interface == "br-lan"
    assert config.cloud.upload_seconds == 1 and config.accounting.interim_seconds == 3
    plain = gwconfig.from_dict(tomllib.loads(vm_internet.VMInternet("ns", tmp_path).venue_config()))
    assert plain.accounting.interim_seconds == gwconfig.AccountingConfig().interim_seconds


def test_isp_hands_the_router_its_wan_address_only() -> None:
    conf = vm_internet.isp_dnsmasq_conf(Path("/run/x"))
    wan = vm_internet.ROUTER_WAN
    assert f"dhcp-range={wan},{wan},255.255.255.252," in conf
    assert "except-interface=lo" in conf  # the lab's own DNS answers on lo; the ISP forwards
    assert f"server={vm_internet.DNS_IP}" in conf
    assert "except-interface" not in vm_internet.isp_dnsmasq_conf(Path("/x"), services=False)


def test_opt114_decoding() -> None:
    url = "https://portal.plaza.test/api/captive"
    assert vagrant_lab.decode_opt114(url.encode().hex()) == url
    assert vagrant_lab.decode_opt114(url) == url


def test_phone_vm_runs_curl_over_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "HTTP/1.1 204 No Content\n\n\n0.010", "")

    monkeypatch.setattr(vagrant_lab.subprocess, "run", fake_run)
    phone = vagrant_lab.VMPhone("phone1", "198.18.100.7")
    r = phone.get("http://example.test/a b")
    assert r.ok and r.status == 204
    argv = seen[0]
    assert argv[:4] == ["ip", "netns", "exec", libvirt.NETNS]
    assert "root@198.18.100.7" in argv
    remote = argv[-1]
    assert remote.startswith("curl ") and "'http://example.test/a b'" in remote
    assert "/root/plaza-phone.cookies" in remote


def test_the_browser_tunnel_is_a_socks_proxy_made_by_the_phone() -> None:
    argv = vagrant_internet.socks_argv("198.18.100.7", vagrant_lab.SOCKS_PORT)
    assert argv[:4] == ["ip", "netns", "exec", libvirt.NETNS]  # where the browser runs too
    assert argv[argv.index("-D") + 1] == f"127.0.0.1:{vagrant_lab.SOCKS_PORT}"  # not the LAN's
    assert "-N" in argv and "ExitOnForwardFailure=yes" in argv and argv[-1] == "root@198.18.100.7"


def test_a_tunnel_that_ends_is_a_one_line_error() -> None:
    tunnel = subprocess.Popen(
        ["sh", "-c", "echo 'connect to host 198.18.100.7 port 22: No route to host' >&2"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    tunnel.wait()
    with pytest.raises(vagrant_lab.VMLabError, match="tunnel into the phone ended: connect to"):
        vagrant_lab.VMLab._wait_socks(tunnel, seconds=5)


class FakeLab:
    """The two views delivered_once compares: the router's outbox and the cloud's records."""

    def __init__(self, router: list[dict], cloud: list[dict]) -> None:
        self.router, self.cloud = router, cloud

    def router_usage(self, mac: str) -> list[dict]:
        return self.router

    def cloud_usage(self, mac: str) -> list[dict]:
        return self.cloud


def record(seq: int, down: int, total: int, sent: float | None = 1.0, sid: str = "s1") -> dict:
    return {"key": f"{sid}-{seq}", "session_id": sid, "seq": seq, "bytes_down": down,
            "total_bytes_down": total, "sent_at": sent}  # fmt: skip


def test_usage_delivered_once_when_records_match() -> None:
    rows = [record(1, 100, 100), record(2, 50, 150), record(1, 7, 7, sid="s2")]
    lab = FakeLab(rows, rows)
    said = vagrant_scenarios.delivered_once(lab, "02:00:00:00:00:01")  # type: ignore[arg-type]
    assert said.startswith("3 record(s) of 2 session(s)")
    assert "1 record(s) of 1" in vagrant_scenarios.delivered_once(lab, "m", "s2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("router", "cloud", "message"),
    [
        ([record(1, 100, 100, sent=None)], [], "still waiting"),
        ([record(1, 100, 100)], [record(1, 100, 100)] * 2, "stored twice"),
        ([record(1, 100, 100), record(2, 50, 150)], [record(1, 100, 100)], "not the router's"),
        ([record(1, 100, 100), record(2, 100, 150)], [record(1, 100, 100), record(2, 100, 150)],
         "add to 200, its total is 150"),
        ([record(1, 100, 100), record(3, 50, 150)], [record(1, 100, 100), record(3, 50, 150)],
         "sequence"),
        ([], [], "no usage record"),
    ],
)  # fmt: skip
def test_usage_counted_twice_or_lost_is_caught(router: list, cloud: list, message: str) -> None:
    with pytest.raises(vagrant_scenarios.StepFailed, match=message):
        vagrant_scenarios.delivered_once(FakeLab(router, cloud), "m")  # type: ignore[arg-type]


def test_every_scenario_is_a_plaza_lab_vm_action() -> None:
    from lab import cli, vagrant_cli

    assert set(vagrant_scenarios.SCENARIOS) == {"demo", "outage", "crash", "roam", "browser"}
    assert set(vagrant_cli.ACTIONS) >= set(vagrant_scenarios.SCENARIOS)
    source = (ROOT / "lab" / "cli.py").read_text()  # plaza-lab's choices (cli.py stays light)
    for action in vagrant_cli.ACTIONS:
        assert f'"{action}"' in source
    with pytest.raises(SystemExit) as exit_:
        cli.main(["vm", "fly"])
    assert exit_.value.code == 2


def test_vm_test_runs_every_scenario_through_the_internet_vm_and_checks_nothing_is_left() -> None:
    script = (ROOT / "lab" / "vagrant" / "vm-test.sh").read_text()
    default = script.split("PLAZA_VM_SCENARIOS:-", 1)[1].split("}", 1)[0]
    assert default.split() == list(vagrant_scenarios.SCENARIOS)  # demo and outage among them
    assert "PLAZA_VM_INTERNET:-vm}" in script
    assert "vm down --all" in script and "trap cleanup EXIT" in script
    assert "vagrant box list" in script and "ip netns list" in script
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test") < ci.index("make vm-test")  # its own step, after the suite


# -- the internet VM (lab/vagrant_inetbox.py, lab/vagrant_internet.py, lab/vm_internet.py) ------


def test_internet_box_installs_what_the_internet_runs_and_no_kernel_binding() -> None:
    from lab import vagrant_inetbox

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = vagrant_inetbox.requirements(pyproject)
    names = {r.split(">")[0].split("[")[0].split("=")[0].strip() for r in reqs}
    assert {"flask", "cryptography", "sqlalchemy", "alembic", "pywebpush", "rich"} <= names
    assert "netfilterqueue" not in names  # the router's NFQUEUE binding: no compiler, no use
    scripts = vagrant_inetbox.scripts(pyproject)
    assert scripts["plaza-cloud"].startswith(f"#!{vagrant_inetbox.OPT}/venv/bin/python3\n")
    assert "from cloud.cli import main" in scripts["plaza-cloud"]
    assert set(scripts) >= {"plaza-cloud", "plaza-provision"}  # what the lab calls on the VM


def test_internet_box_layer_is_the_isp_end_of_the_wan_and_runs_vm_internet() -> None:
    from lab import vagrant_inetbox

    assert f"Address={vm_internet.INTERNET_WAN}" in vagrant_inetbox.WAN_NETWORK
    assert "Name=eth0" in vagrant_inetbox.WAN_NETWORK  # eth0: on plaza-wan, slot 0x0a
    assert "-m lab.vm_internet serve" in vagrant_inetbox.UNIT
    assert "Restart=always" in vagrant_inetbox.UNIT
    assert {"plaza-gateway", "plaza-dnsmasq", "systemd-resolved"} <= set(vagrant_inetbox.MASKED)


def test_internet_box_is_stale_when_the_lab_code_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab import vagrant_inetbox

    monkeypatch.setattr(vagrant_box, "current_digest", lambda: "image")
    monkeypatch.setattr(vagrant_inetbox, "BOX", tmp_path / "i.box")
    monkeypatch.setattr(vagrant_inetbox, "BOX_INPUTS", tmp_path / "i.inputs")
    assert vagrant_inetbox.is_stale()  # no box yet
    (tmp_path / "i.box").write_bytes(b"box")
    (tmp_path / "i.inputs").write_text(vagrant_inetbox.current_digest() + "\n")
    assert not vagrant_inetbox.is_stale()
    monkeypatch.setattr(vagrant_box, "current_digest", lambda: "another image")
    assert vagrant_inetbox.is_stale()
    monkeypatch.setattr(vagrant_box, "current_digest", lambda: "image")
    first = vagrant_inetbox.source_files()[0]
    monkeypatch.setattr(vagrant_inetbox, "source_files", lambda: [first, Path(__file__)])
    assert vagrant_inetbox.is_stale()  # another file of code: make vagrant-box rebuilds it,
    assert not vagrant_inetbox.outdated()  # but `vm up` only warns
    monkeypatch.setattr(vagrant_box, "current_digest", lambda: "another image")
    assert vagrant_inetbox.outdated()  # another image: `vm up` refuses it
    (tmp_path / "i.inputs").unlink()
    assert vagrant_inetbox.outdated()


def test_vm_internet_runs_in_its_own_namespace_or_a_named_one(tmp_path: Path) -> None:
    assert vm_internet.VMInternet(None, tmp_path)._in("ss", "-Hln") == ["ss", "-Hln"]
    assert vm_internet.VMInternet("inet", tmp_path)._in("ss") == ["ip", "netns", "exec", "inet",
                                                                 "ss"]  # fmt: skip


def test_vm_internet_makes_the_wallet_keys_once(tmp_path: Path) -> None:
    """An internet VM booting again (the outage) keeps the keys the router already knows."""
    internet = vm_internet.VMInternet(None, tmp_path)
    first = internet._wallet_keys()
    key = (tmp_path / "wallet" / "wallet-rsa2.pub").read_bytes()
    again = vm_internet.VMInternet(None, tmp_path)._wallet_keys()
    assert again == first and "settings" in again and "oidc" in again["push"]
    assert (tmp_path / "wallet" / "wallet-rsa2.pub").read_bytes() == key


def test_vm_internet_reads_the_clouds_usage_records(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "cloud" / "cloud.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE usage_records (id INTEGER PRIMARY KEY, key, session_id, seq, "
                  "bytes_down, total_bytes_down, mac)")  # fmt: skip
        c.execute("INSERT INTO usage_records VALUES (1, 'k1', 's1', 1, 10, 10, 'm1'), "
                  "(2, 'k2', 's2', 1, 5, 5, 'm2')")  # fmt: skip
    rows = vm_internet.cloud_usage(tmp_path, "m1")
    assert rows == [{"key": "k1", "session_id": "s1", "seq": 1, "bytes_down": 10,
                     "total_bytes_down": 10}]  # fmt: skip


def test_the_internet_vm_comes_up_first_and_the_namespace_is_still_there() -> None:
    from lab import vagrant_internet

    lab = vagrant_lab.VMLab(phones=2, internet="vm")
    assert lab.machines() == ["internet", "router", "phone1", "phone2"]
    assert isinstance(lab.internet, vagrant_internet.InternetVM)
    assert lab.cut_name == "vagrant halt internet"
    ns = vagrant_lab.VMLab(phones=1, internet="namespace")
    assert ns.machines() == ["router", "phone1"]
    assert isinstance(ns.internet, vagrant_internet.NamespaceInternet)
    with pytest.raises(vagrant_lab.VMLabError, match="say vm or namespace"):
        vagrant_lab.VMLab(internet="cloud")


def test_the_technicians_laptop_is_the_internet_vm(monkeypatch: pytest.MonkeyPatch) -> None:
    from lab import vagrant_internet

    internet = vagrant_internet.InternetVM(lambda machine: {"internet": "198.18.100.9"}[machine])
    argv = internet.laptop(["plaza-provision", "verify", "198.18.0.1"])
    assert argv[:4] == ["ip", "netns", "exec", libvirt.NETNS]  # over the management network
    assert "root@198.18.100.9" in argv
    assert argv[-1] == f"PATH={vagrant_internet.VM_BIN}:$PATH plaza-provision verify 198.18.0.1"


def test_vagrantfile_defines_the_internet_vm_on_the_wan() -> None:
    text = (ROOT / "Vagrantfile").read_text()
    block = text[text.index('config.vm.define "internet"') :]
    block = block[: block.index("\n  end\n")]
    assert 'n.vm.box = "plaza/internet"' in block
    assert 'bare_network(n.vm, "plaza-wan", WAN_SLOT)' in block
    assert text.index('define "internet"') < text.index('define "router"')  # `vagrant up` order


def test_make_vagrant_box_builds_both_boxes() -> None:
    make = (ROOT / "Makefile").read_text()
    target = make[make.index("\nvagrant-box:") :]
    target = target[: target.index("\n\n")]
    assert "-m lab.vagrant_box" in target and "-m lab.vagrant_inetbox" in target


def test_usage_views_read_apart_are_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cloud read seconds after the router (over SSH under emulation) may hold a record the
    router made in between: asked again, the views agree; a doubled record still fails."""
    monkeypatch.setattr(vagrant_scenarios.time, "sleep", lambda s: None)
    router = [record(1, 100, 100)]
    reads = iter([[record(1, 100, 100), record(2, 50, 150)], [record(1, 100, 100)]])

    class Racing(FakeLab):
        def cloud_usage(self, mac: str) -> list[dict]:
            return next(reads)

    said = vagrant_scenarios.delivered_once(Racing(router, []), "m", seconds=30)  # type: ignore[arg-type]
    assert said.startswith("1 record(s) of 1 session(s)")
    doubled = FakeLab(router, [record(1, 100, 100)] * 2)
    with pytest.raises(vagrant_scenarios.StepFailed, match="stored twice"):
        vagrant_scenarios.delivered_once(doubled, "m", seconds=0.05)  # type: ignore[arg-type]


def test_cloud_records_newer_than_the_routers_view_are_not_compared() -> None:
    router = [record(1, 100, 100)]
    cloud = [record(1, 100, 100), record(2, 50, 150)]  # made after the router was read
    said = vagrant_scenarios.delivered_once(FakeLab(router, cloud), "m")  # type: ignore[arg-type]
    assert said.startswith("1 record(s) of 1 session(s)")
    unknown = [*cloud[:1], record(1, 9, 9, sid="s9")]  # a session the router never wrote
    with pytest.raises(vagrant_scenarios.StepFailed, match="not the router's"):
        vagrant_scenarios.delivered_once(FakeLab(router, unknown), "m")  # type: ignore[arg-type]
