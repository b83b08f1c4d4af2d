"""The plaza/internet box (`make vagrant-box`): the Vagrant lab's internet as a VM.

Built like the router box (lab/vagrant_box.py `pack`): a copy of the router image's disk (an
mmdebstrap Debian 12 with python3, dnsmasq, iproute2 and SSH: what the lab's internet needs
too) with a layer written on it:

- Plaza's router services masked, the router's network files replaced: eth0 (on plaza-wan)
  holds the ISP's end of the WAN, 198.18.0.2/30; the management NIC as in the router box;
- the project's code under /opt/plaza-lab/src and a virtual environment beside it whose
  site-packages is a wheelhouse of the cloud's, the wallet's and the technician's Python
  dependencies installed here, on the host, by pip (guests have no internet);
- plaza-lab-internet.service: `python -m lab.vm_internet serve`, the same services, started by
  the same code, as the namespace internet of the router image's end-to-end tests (tests/vm).

Cached on the router image's inputs, the builders' source, the requirements and the project's
code: a change to any of them rebuilds the box. `plaza-lab vm up` refuses a box built from
another image, builder or requirements (`outdated`) and only warns when the code changed since
(`is_stale`): in a shared working tree a colleague's edit must not stop a run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from lab import vagrant_box
from lab.topology import DNS_IP
from lab.vm_internet import INTERNET_WAN

ROOT = vagrant_box.ROOT
BOX = vagrant_box.DIST / "plaza-internet.box"
BOX_INPUTS = vagrant_box.DIST / "plaza-internet.box.inputs"
BOX_NAME = "plaza/internet"
PACKAGES = ("plaza", "gateway", "portal", "lab", "cloud", "provisioning")
OPT = "/opt/plaza-lab"
PYTHON = "python3.11"  # Debian 12's, in the image; the host's venv must be the same minor
STATE = "/var/lib/plaza-lab"
# The router's own units: none runs on the internet.
MASKED = ("plaza-gateway", "plaza-portal", "plaza-dnsmasq", "plaza-boot-check",
          "plaza-fleet-enrol", "systemd-resolved")  # fmt: skip
ROUTER_NETWORK_FILES = ("10-wan.network", "20-br-lan.netdev", "21-lan-port.network",
                        "22-br-lan.network")  # fmt: skip
WAN_NETWORK = f"""\
# The internet's end of the router's WAN (plaza-wan): the ISP (lab/vagrant_inetbox.py).
[Match]
Name=eth0

[Network]
Address={INTERNET_WAN}
ConfigureWithoutCarrier=yes
LinkLocalAddressing=no
IPv6AcceptRA=no
"""
UNIT = f"""\
[Unit]
Description=The lab's internet: web, DNS, sandbox wallet, Plaza cloud and push, the ISP
After=systemd-networkd.service

[Service]
# The ISP's dnsmasq binds to eth0's address: wait for networkd to put it there.
ExecStartPre=/usr/bin/timeout 60 /bin/sh -c 'until ip -4 -o addr show dev eth0 | grep -q inet; \
do sleep 0.5; done'
ExecStart={OPT}/venv/bin/python3 -m lab.vm_internet serve --dir {STATE}
Restart=always
RestartSec=2
KillMode=control-group
TimeoutStopSec=20

[Install]
WantedBy=multi-user.target
"""


def requirements(pyproject: dict) -> list[str]:
    """What the internet runs: the router's dependencies (the portal's and the wallet's Flask,
    cryptography...) without the kernel's queue binding, plus the cloud's and the technician's."""
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    deps = [d for d in project["dependencies"] if not d.startswith("netfilterqueue")]
    return [*deps, *extras["cloud"], *extras["provision"]]


def scripts(pyproject: dict) -> dict[str, str]:
    """The console scripts of pyproject.toml as files for the VM's environment (the lab calls
    plaza-cloud and plaza-provision beside its interpreter)."""
    out = {}
    for name, target in pyproject["project"]["scripts"].items():
        module, func = target.split(":")
        out[name] = (f"#!{OPT}/venv/bin/python3\nimport sys\nfrom {module} import {func}\n"
                     f"sys.exit({func}())\n")  # fmt: skip
    return out


def source_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        files += [p for p in sorted((ROOT / package).rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts]  # fmt: skip
    return files


def _digest(base: str, paths: list[Path]) -> str:
    h = hashlib.sha256(base.encode())
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def base_digest() -> str:
    """The box's own inputs: the router image, the builders, the requirements."""
    builders = [Path(__file__), ROOT / "lab" / "vagrant_box.py", ROOT / "pyproject.toml"]
    return _digest(vagrant_box.current_digest(), builders)


def current_digest() -> str:
    """The base and the project's code: what the cache is keyed on (two lines)."""
    base = base_digest()
    return f"{_digest(base, source_files())}\n{base}"


def _saved() -> list[str]:
    if not BOX.exists() or not BOX_INPUTS.exists():
        return []
    return BOX_INPUTS.read_text().split()


def is_stale() -> bool:
    """Missing, or built from other inputs or other code: `make vagrant-box` rebuilds it."""
    return _saved() != current_digest().split()


def outdated() -> bool:
    """Missing, or built from another image, builder or requirements (the code aside)."""
    saved = _saved()
    return len(saved) != 2 or saved[1] != base_digest()


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def customise(root: Path) -> None:
    """The internet's layer in the mounted root of a copy of the image's disk."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    net = root / "etc/systemd/network"
    for name in ROUTER_NETWORK_FILES:
        (net / name).unlink(missing_ok=True)
    _write(root, "/etc/systemd/network/05-vagrant-mgmt.network", vagrant_box.MGMT_NETWORK)
    _write(root, "/etc/systemd/network/10-internet-wan.network", WAN_NETWORK)
    _write(root, "/etc/hostname", "internet\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)  # a link to resolved's, masked here
    _write(root, "/etc/resolv.conf", f"nameserver {DNS_IP}\n")  # the lab's DNS (serve)
    venv = root / OPT.lstrip("/") / "venv"
    site = venv / "lib" / PYTHON / "site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin/python3").symlink_to(f"/usr/bin/{PYTHON}")
    (venv / "bin/python").symlink_to("python3")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    pip = str(Path(sys.executable).parent / "pip")
    pins = vagrant_box.WORK / "constraints.txt"  # the versions the host's tests run with
    pins.write_text(vagrant_box._run(pip, "freeze", "--exclude-editable"))
    vagrant_box._run(
        pip, "install", "--quiet", "--target", str(site), "--constraint", str(pins),
        "--no-warn-script-location", *requirements(pyproject), timeout=1200,
    )  # fmt: skip
    shutil.rmtree(site / "bin", ignore_errors=True)  # the host's shebangs: ours are below
    src = root / OPT.lstrip("/") / "src"
    for path in source_files():
        target = src / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (site / "plaza-lab-src.pth").write_text(f"{OPT}/src\n")
    for name, text in scripts(pyproject).items():
        _write(root, f"{OPT}/venv/bin/{name}", text, 0o755)
    _write(root, "/etc/systemd/system/plaza-lab-internet.service", UNIT)
    vagrant_box._run(
        "chroot", str(root), "/bin/sh", "-c",
        f"systemctl mask {' '.join(MASKED)} >/dev/null 2>&1; "
        "systemctl enable plaza-lab-internet.service >/dev/null 2>&1; "
        f"{PYTHON} -m compileall -q -j 0 {OPT}/src >/dev/null; "  # none under emulation
        # The demo merchant, venue and shop in the cloud's database (serve keeps them): 10 s
        # here, a minute and more under emulation at every first boot.
        f"{OPT}/venv/bin/python3 -m lab.vm_internet claim --dir {STATE} >/dev/null",
        timeout=900,
    )  # fmt: skip


def build(force: bool = False) -> Path:
    digest = current_digest()
    if not force and not is_stale():
        print(f"{BOX}: up to date")
        return BOX
    return vagrant_box.pack(BOX, BOX_INPUTS, digest, customise)


def main() -> int:
    try:
        build(force="--force" in sys.argv)
        vagrant_box.add(BOX, BOX_NAME, BOX_INPUTS)
    except (vagrant_box.BoxError, subprocess.SubprocessError) as exc:
        print(f"vagrant-box: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
