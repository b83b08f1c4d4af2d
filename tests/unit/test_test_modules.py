"""No test module imports another test module.

Importing a test module runs its module-level code a second time under another name, drags its
fixtures in by hand (`# noqa: F401`), and makes one module's tests depend on another's private
helpers: what tests share lives in conftest.py files or in helper modules under tests/ whose
names do not start with `test_` (tests/fakes/, tests/portal_helpers.py, tests/wallet_harness.py,
...). Checked on the source (AST), so an import inside a function counts too.
"""

from __future__ import annotations

import ast

from tests.conftest import ROOT

TESTS = ROOT / "tests"


def _is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def imported_test_modules(source: str, package: str) -> list[str]:
    """The test modules (`test_*`) that `source`, a module of `package`, imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import test_x, from .test_x import y
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if _is_test_module(base):
                found.append(base)
            found += [f"{base}.{a.name}" for a in node.names if _is_test_module(a.name)]
    return found


def test_no_test_module_imports_another() -> None:
    offenders = []
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 50  # the walk found the suite
    for path in modules:
        package = ".".join(path.relative_to(ROOT).parent.parts)
        for name in imported_test_modules(path.read_text(), package):
            offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_the_check_would_catch_each_form_of_import() -> None:
    """The check above could fail: each way of naming a test module is found."""
    source = (
        "from tests.unit.test_portal import FakeControl\n"
        "import tests.cloud.test_dashboard\n"
        "from tests.unit import test_uplink\n"
        "from .test_garden_sni import client_hello\n"
        "def f():\n    from tests.browser.test_dashboard_browser import ARGS\n"
        "from tests.portal_helpers import PHONE\n"  # a helper module: allowed
        "from tests.unit.conftest import MakeGateway\n"  # a conftest: allowed
    )
    assert sorted(imported_test_modules(source, "tests.unit")) == [
        "tests.browser.test_dashboard_browser",
        "tests.cloud.test_dashboard",
        "tests.unit.test_garden_sni",
        "tests.unit.test_portal",
        "tests.unit.test_uplink",
    ]
