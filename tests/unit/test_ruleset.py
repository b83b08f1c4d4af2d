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


def _chain(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"\tchain {name} {{")
    return [line.strip() for line in lines[start + 1 : lines.index("\t}", start)]]


def test_garden_sets_are_large_and_time_out() -> None:
    text = ruleset.render(Config())
    for name, kind in (("garden4", "ipv4_addr"), ("garden6", "ipv6_addr")):
        block = text[text.index(f"set {name} {{") :].split("}", 1)[0]
        assert f"type {kind}" in block
        assert "size 65536" in block and "flags dynamic,timeout" in block
        assert "timeout 1h" in block


def test_garden_classify_runs_before_the_queue_hook() -> None:
    rules = _chain(ruleset.render(Config()), "garden_classify")
    assert rules[0] == "type filter hook forward priority mangle - 5; policy accept;"
    assert "ct mark & 0x00600000 != 0x00000000 return" in rules  # decided: never again
    queue4 = next(r for r in rules if "@garden4" in r)
    assert queue4.startswith("tcp dport 443 ip daddr @garden4 ip length . @th,96,8 != {")
    assert queue4.endswith("meta mark set meta mark | 0x00100000")
    # every "no payload" pair: 20-byte IPv4 header + 4 * data offset (5..15 words)
    assert "40 . 0x50, 44 . 0x60" in queue4 and "80 . 0xf0 }" in queue4
    queue6 = next(r for r in rules if "@garden6" in r)
    assert "ip6 length . @th,96,8 != { 20 . 0x50," in queue6 and "60 . 0xf0 }" in queue6


def test_lan_forward_turns_verdicts_into_connection_marks() -> None:
    rules = _chain(ruleset.render(Config()), "lan_forward")
    order = [
        "ip saddr . ether saddr @auth4 accept",
        "ct mark & 0x00200000 == 0x00200000 accept",
        "meta l4proto tcp ct mark & 0x00400000 == 0x00400000 reject with tcp reset",
        "meta mark & 0x00300000 == 0x00300000 update @garden4 { ip daddr } "
        "ct mark set ct mark | 0x00200000 accept",
        "meta l4proto tcp meta mark & 0x00100000 == 0x00100000 "
        "ct mark set ct mark | 0x00400000 reject with tcp reset",
        "tcp dport 443 ip daddr @garden4 accept",
        "udp dport 123 ip daddr @garden4 accept",
        "meta l4proto tcp reject with tcp reset",
        "reject with icmpx admin-prohibited",  # QUIC to the garden included
    ]
    assert [rules.index(rule) for rule in order] == sorted(rules.index(r) for r in order)
    assert not any("udp dport 443" in r for r in rules)


def test_marks_do_not_overlap() -> None:
    marks = [ruleset.MARK_QUEUE, ruleset.MARK_ALLOW, ruleset.MARK_DENY]
    assert sum(marks) == ruleset.MARK_QUEUE | ruleset.MARK_ALLOW | ruleset.MARK_DENY
    assert ruleset.MARK_DECIDED == ruleset.MARK_ALLOW | ruleset.MARK_DENY


def test_transaction_carries_garden_addresses_over() -> None:
    text = ruleset.transaction(
        Config(), garden=[("192.0.2.20", 1799), ("2001:db8::20", 60), ("192.0.2.21", 0)]
    )
    assert "add element inet plaza garden4 { 192.0.2.20 expires 1799s }" in text
    assert "add element inet plaza garden6 { 2001:db8::20 expires 60s }" in text
    assert "192.0.2.21" not in text  # already expired
    assert "add element" not in ruleset.transaction(Config())


def test_garden_elements_from_nft_json() -> None:
    listing = (
        '{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", '
        '"name": "garden4", "table": "plaza", "type": "ipv4_addr", "timeout": 3600, '
        '"elem": [{"elem": {"val": "192.0.2.20", "expires": 3599}}]}}]}'
    )
    assert ruleset.garden_elements(listing) == [("192.0.2.20", 3599)]


def test_native_queue_table() -> None:
    text = ruleset.queue_table(7)
    assert text.startswith("table inet plaza_queue {")
    assert "type filter hook forward priority mangle; policy accept;" in text
    assert "meta mark & 0x00100000 == 0x00100000 queue num 7 bypass" in text
