"""The import rules of the three deployables (issue 12), read from the code.

The router (gateway, portal) and the cloud are separate programs on separate machines; what
they share is a wire protocol on the bottom floor, `plaza/`. So: plaza imports none of the
others; the cloud imports nothing of the router; the portal reaches the gateway only through
its public seams; the gateway knows neither portal nor cloud; no module circles anywhere; and
docs/architecture.md shows the graph as it is.
"""

from __future__ import annotations

import re

import pytest

from tests import importgraph

ROUTER_SEAMS = {  # what the portal (and the lab) may import of the gateway
    "gateway.config",  # the config the portal is started with
    "gateway.control_client",  # the control socket: the only way to ask for a decision
    "gateway.uplink.cloud_config",  # the venue texts and offers the cloud sent
    "gateway.uplink.identity",  # the enrolment identity, to sign the push subscription
}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return importgraph.edges()


def imports_of(graph: dict[str, set[str]], package: str) -> set[tuple[str, str]]:
    return {
        (source, target)
        for source, targets in graph.items()
        if source.split(".")[0] == package
        for target in targets
    }


def outside(pairs: set[tuple[str, str]], allowed: tuple[str, ...]) -> list[str]:
    return sorted(f"{s} -> {t}" for s, t in pairs if t.split(".")[0] not in allowed)


def test_the_bottom_floor_imports_nothing_of_the_others(graph: dict[str, set[str]]) -> None:
    assert outside(imports_of(graph, "plaza"), ("plaza",)) == []


def test_the_cloud_imports_nothing_of_the_router(graph: dict[str, set[str]]) -> None:
    assert outside(imports_of(graph, "cloud"), ("cloud", "plaza")) == []


def test_the_gateway_knows_neither_portal_nor_cloud_nor_lab(graph: dict[str, set[str]]) -> None:
    assert outside(imports_of(graph, "gateway"), ("gateway", "plaza")) == []


def test_the_portal_reaches_the_gateway_only_through_its_seams(
    graph: dict[str, set[str]],
) -> None:
    pairs = imports_of(graph, "portal")
    assert outside(pairs, ("portal", "gateway", "plaza")) == []
    into_gateway = sorted(f"{s} -> {t}" for s, t in pairs if t.split(".")[0] == "gateway")
    assert [p for p in into_gateway if p.split(" -> ")[1] not in ROUTER_SEAMS] == []


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    assert importgraph.cycles(graph) == []


def test_a_circle_would_be_found() -> None:
    """The check above could fail: a made-up graph with a three-module circle."""
    made_up = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert importgraph.cycles(made_up) == [["a", "b", "c"]]


def test_the_rule_would_catch_a_cloud_module_importing_the_gateway() -> None:
    made_up = {"cloud.usage": {"gateway.stations.sessions", "plaza.records"}}
    assert outside(imports_of(made_up, "cloud"), ("cloud", "plaza")) == [
        "cloud.usage -> gateway.stations.sessions"
    ]


def test_lazy_imports_count_and_type_checking_ones_do_not(tmp_path, monkeypatch) -> None:
    package = tmp_path / "plaza"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "lazy.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from gateway import gateway\n"
        "def f():\n    from cloud import models\n"
    )
    monkeypatch.setattr(importgraph, "ROOT", tmp_path)
    monkeypatch.setattr(importgraph, "PACKAGES", ("plaza", "gateway", "cloud"))
    monkeypatch.setattr(importgraph, "modules", lambda: {"plaza.lazy": package / "lazy.py"})
    assert importgraph.edges() == {"plaza.lazy": {"cloud"}}  # cloud.models is no module here


def test_the_architecture_page_shows_the_graph_as_it_is() -> None:
    page = (importgraph.ROOT / "docs" / "architecture.md").read_text()
    match = re.search(
        r"<!-- import-graph: begin.*?-->\n(.*?)<!-- import-graph: end -->", page, re.DOTALL
    )
    assert match is not None, "docs/architecture.md lost its import-graph markers"
    assert match.group(1) == importgraph.render(), (
        "docs/architecture.md is out of date: paste the output of `python -m tests.importgraph`"
    )


MAX_LINES = 500  # a module one can read in a sitting; past this it is doing two jobs


def test_no_module_over_500_lines() -> None:
    """The deployables' modules stay small (the lab and tests are exempt: tools, not product)."""
    too_long = sorted(
        f"{name} ({lines} lines)"
        for name, path in importgraph.modules().items()
        if name.split(".")[0] in ("plaza", "gateway", "portal", "cloud", "provisioning")
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    )
    assert too_long == []
