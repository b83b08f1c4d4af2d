"""Three installs from one repo: the router (`pip install .`) carries only what the gateway and
the portal import at run time; the cloud's database, server and push libraries come with
`.[cloud]`. Held here by reading pyproject.toml and by running the router's code in a child
interpreter where the cloud's libraries cannot be imported at all."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUTER_PACKAGES = ("plaza", "gateway", "portal")
CLOUD_ONLY = ("sqlalchemy", "alembic", "psycopg", "gunicorn", "pywebpush", "http_ece", "py_vapid")
IMPORT_NAME = {"psycopg[binary]": "psycopg"}  # distribution -> module, where they differ


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def distribution(requirement: str) -> str:
    return re.split(r"[<>=!~ ;]", requirement, maxsplit=1)[0]


def imported_by_router() -> set[str]:
    """Top-level modules the router's packages import anywhere (module level or inside)."""
    found: set[str] = set()
    for package in ROUTER_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def test_the_router_install_declares_exactly_what_the_router_imports() -> None:
    declared = {distribution(r) for r in project()["dependencies"]}
    assert not declared & set(CLOUD_ONLY), "a cloud library in the router install"
    modules = {IMPORT_NAME.get(d, d).replace("-", "_").lower() for d in declared}
    unused = sorted(m for m in modules if m not in imported_by_router())
    assert unused == [], f"declared for the router but imported by no router package: {unused}"


def test_the_cloud_extra_carries_the_cloud_libraries_and_dev_everything() -> None:
    extras = project()["optional-dependencies"]
    cloud = {IMPORT_NAME.get(distribution(r), distribution(r)) for r in extras["cloud"]}
    assert {"sqlalchemy", "alembic", "psycopg", "gunicorn", "pywebpush"} <= cloud
    assert "plaza[cloud]" in extras["dev"]


BLOCKED_RUN = r"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not in the router install")
        return None

sys.meta_path.insert(0, Block())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
import plaza, gateway, portal
for package in (plaza, gateway, portal):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
from gateway.ops import cli
from gateway import config
import portal as portal_package
portal_package.create_app({"PLAZA_CONFIG": config.load(sys.argv[2]), "SECRET_KEY": "k" * 32})
sys.exit(cli.main(["--config", sys.argv[2], "check-config"]))
"""


def test_the_router_runs_with_no_cloud_library_importable(tmp_path: Path) -> None:
    """Every gateway and portal module imports, and check-config passes on the reference
    example, in an interpreter where the cloud's libraries raise ImportError."""
    doc = (ROOT / "docs" / "gateway-config.md").read_text()
    match = re.search(r"^```toml\n(.*?)^```", doc, re.DOTALL | re.MULTILINE)
    assert match is not None
    config = tmp_path / "gateway.toml"
    config.write_text(match.group(1).replace('"br-lan"', '"lo"'))  # an interface every box has
    run = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, ",".join(CLOUD_ONLY), str(config)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_router_install_asked_for_the_cloud_says_what_to_install() -> None:
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'sqlalchemy' else real(n, *a)\n"
        "from cloud import cli\n"
        "sys.exit(cli.main(['migrate']))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "plaza-cloud: this is a router install (sqlalchemy is missing); "
        "the cloud needs: pip install 'plaza[cloud]'"
    ]


def test_the_wheel_carries_every_file_the_packages_read(tmp_path: Path) -> None:
    """A non-editable install has only what package-data names: every tracked file that is not
    Python under the installed packages (templates, static, the lab's feed, the migration
    template) must be in the wheel. The editable installs of development and CI would not
    notice one left out; a cloud or router installed from the wheel would, as a 500."""
    import shutil
    import zipfile

    # Built from a copy of the tree: setuptools reuses a checkout's build/lib, whose stale
    # files would ride along in the wheel and hide a file package-data leaves out.
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    source = tmp_path / "src"
    for name in tracked:
        if Path(ROOT, name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(ROOT, name), source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--wheel-dir", str(tmp_path), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("plaza-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    packages = ("plaza/", "gateway/", "portal/", "lab/", "cloud/")
    data = [f for f in tracked if f.startswith(packages) and not f.endswith(".py")
            and (source / f).is_file()]  # fmt: skip
    assert data, "no data files found: the tree is not what this test expects"
    assert sorted(f for f in data if f not in packaged) == []
