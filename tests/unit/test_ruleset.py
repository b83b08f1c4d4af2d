from gateway import ruleset
from gateway.config import Config, LanConfig, PortalConfig
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden" / "plaza.nft"


def test_render_matches_golden() -> None:
    """The checked-in golden copy is also compared with the kernel's listing (netns test)."""
    assert ruleset.render(Config()) == GOLDEN.read_text()


def test_clients_become_set_elements_not_rules() -> None:
    clients = [("198.19.0.11", "02:00:00:00:00:03"), ("198.19.0.9", "02:00:00:00:00:02")]
    one = ruleset.render(Config(), clients[:1])
    many = ruleset.render(Config(), clients)
    rules = [line for line in many.splitlines() if "@auth4" in line]
    assert len(rules) == len([line for line in one.splitlines() if "@auth4" in line])
    # sorted numerically, as nft lists them
    assert many.index("198.19.0.9 . 02:00:00:00:00:02") < many.index("198.19.0.11 .")


def test_config_shapes_the_table() -> None:
    config = Config(lan=LanConfig(interface="lan0"), portal=PortalConfig(intercept_port=9090))
    text = ruleset.render(config)
    assert 'iifname != "lan0" return' in text
    assert "tcp dport 80 redirect to :9090" in text
    assert "br-lan" not in text


def test_transaction_replaces_the_table_atomically() -> None:
    text = ruleset.transaction(Config(), [("198.19.0.5", "02:00:00:00:00:05")])
    lines = text.splitlines()
    assert lines[:2] == ["table inet plaza", "delete table inet plaza"]
    assert "198.19.0.5 . 02:00:00:00:00:05" in text


def test_element_commands_split_families() -> None:
    cmd = ruleset.element_command(
        "add", [("198.19.0.5", "02:00:00:00:00:05"), ("2001:db8::5", "02:00:00:00:00:05")]
    )
    assert "add element inet plaza auth4 { 198.19.0.5 . 02:00:00:00:00:05 }" in cmd
    assert "add element inet plaza auth6 { 2001:db8::5 . 02:00:00:00:00:05 }" in cmd
    assert ruleset.element_command("delete", []) == ""
