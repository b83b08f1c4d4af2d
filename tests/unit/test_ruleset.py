from gateway.config import Config, LanConfig, PortalConfig
from gateway.dataplane import ruleset
from gateway.dataplane.grants import (
    Grant,
    Start,
    change_commands,
    desired,
    diff,
    element_command,
    parse_readings,
    parse_state,
)
from gateway.stations.accounting import Usage
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


def test_the_portal_ports_are_open_to_the_lan_whatever_they_are() -> None:
    portal = PortalConfig(port=8080, intercept_port=9090, https_port=8443)
    text = ruleset.render(Config(portal=portal))
    assert "tcp dport { 53, 8080, 8443, 9090 } accept" in text  # 443 is not open: unused


def test_transaction_replaces_the_table_atomically() -> None:
    grant = Grant("s1", "02:00:00:00:00:05", ("198.19.0.5",))
    text = ruleset.transaction(Config(), [grant])
    lines = text.splitlines()
    assert lines[:2] == ["table inet plaza", "delete table inet plaza"]
    assert "add element inet plaza auth4 { 198.19.0.5 . 02:00:00:00:00:05 }" in lines


def test_element_commands_split_families() -> None:
    cmd = element_command(
        "add", [("198.19.0.5", "02:00:00:00:00:05"), ("2001:db8::5", "02:00:00:00:00:05")]
    )
    assert "add element inet plaza auth4 { 198.19.0.5 . 02:00:00:00:00:05 }" in cmd
    assert "add element inet plaza auth6 { 2001:db8::5 . 02:00:00:00:00:05 }" in cmd
    assert element_command("delete", []) == ""


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
    """Classified from lan_antispoof (prerouting, raw: before the queue hook at mangle),
    after the checks that let authorized pairs by and drop forged sources; a chain of its
    own, hooked nowhere."""
    text = ruleset.render(Config())
    antispoof = _chain(text, "lan_antispoof")
    assert antispoof[0] == "type filter hook prerouting priority raw; policy accept;"
    assert antispoof[-1] == "jump garden_classify"
    assert antispoof.index("fib saddr . iif oif missing drop") < len(antispoof) - 1
    rules = _chain(text, "garden_classify")
    assert not any(r.startswith("type ") for r in rules)
    queue4 = next(r for r in rules if "@garden4" in r)
    assert queue4.startswith("tcp dport 443 ip daddr @garden4 ip length . @th,96,8 != {")
    # not the router's own addresses: only forwarded traffic goes to the inspector
    assert queue4.endswith("fib daddr type != local meta mark set meta mark | 0x00100000")
    # every "no payload" pair: 20-byte IPv4 header + 4 * data offset (5..15 words)
    assert "40 . 0x50, 44 . 0x60" in queue4 and "80 . 0xf0 }" in queue4
    queue6 = next(r for r in rules if "@garden6" in r)
    assert "ip6 length . @th,96,8 != { 20 . 0x50," in queue6 and "60 . 0xf0 }" in queue6


def test_lan_forward_turns_verdicts_into_connection_marks() -> None:
    rules = _chain(ruleset.render(Config()), "from_lan")
    order = [
        "ip saddr . ether saddr @auth4 goto client_up4",
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
    # one base chain, on prerouting after conntrack (the ct mark) and lan_antispoof
    assert text.count("type filter hook") == 1
    assert "type filter hook prerouting priority mangle; policy accept;" in text
    assert (
        "meta l4proto tcp meta mark & 0x00100000 == 0x00100000 "
        "ct mark & 0x00600000 == 0x00000000 queue num 7 bypass"
    ) in text  # a decided connection: never again
    # the detector never takes a packet the garden's queue wants (a given-back packet skips
    # the chain's other rules)
    assert "meta mark & 0x00900000 == 0x00800000 queue num 12 bypass" in text


# -- per-client policy and accounting ------------------------------------------------------
MAC = "02:00:00:00:00:05"


def test_client_policy_runs_after_the_filters_limit_then_quota_then_counter() -> None:
    text = ruleset.render(Config())
    assert _chain(text, "lan_forward") == [
        "type filter hook forward priority filter + 10; policy accept;",
        'iifname "br-lan" jump from_lan',
        'oifname "br-lan" meta nfproto vmap { ipv4 : jump client_down4, ipv6 : jump client_down6 }',
    ]
    # authorized pairs go on to their policy; everything else from the LAN is judged
    assert _chain(text, "from_lan")[:2] == [
        "ip saddr . ether saddr @auth4 goto client_up4",
        "ip6 saddr . ether saddr @auth6 goto client_up6",
    ]
    up = _chain(text, "client_up4")
    assert up == ["limit name ip saddr . ether saddr map @rate_up4 drop",
                  "quota name ip saddr . ether saddr map @quota_up4 drop",
                  "quota name ip saddr . ether saddr map @quota_total_up4 drop",
                  "counter name ip saddr . ether saddr map @cnt_up4"]  # fmt: skip
    assert _chain(text, "client_up6")[-1] == "counter name ip6 saddr . ether saddr map @cnt_up6"
    down = _chain(text, "client_down4")
    assert down[0] == "limit name ip daddr map @rate_down4 drop"
    assert down[-1] == "counter name ip daddr map @cnt_down4"
    assert _chain(text, "client_down6") == ["limit name ip6 daddr map @rate_down6 drop",
                                            "quota name ip6 daddr map @quota_down6 drop",
                                            "quota name ip6 daddr map @quota_total_down6 drop",
                                            "counter name ip6 daddr map @cnt_down6"]  # fmt: skip
    assert "\tmap quota_total_down4 {\n\t\ttype ipv4_addr : quota\n\t}" in text
    assert "\tmap cnt_up6 {\n\t\ttype ipv6_addr . ether_addr : counter\n\t}" in text


def test_fingerprint_follows_the_structure_not_the_clients() -> None:
    plain = ruleset.fingerprint(ruleset.render(Config()))
    assert plain and len(plain) == 12
    with_client = ruleset.render(Config(), [("198.19.0.5", MAC)])
    assert ruleset.fingerprint(with_client) == plain
    other = ruleset.render(Config(lan=LanConfig(interface="lan0")))
    assert ruleset.fingerprint(other) != plain
    assert ruleset.fingerprint("table inet plaza {\n}\n") is None


def test_grant_of_an_unlimited_client_is_auth_and_two_counters() -> None:
    grant = Grant("s1", MAC, ("198.19.0.5",))
    state = desired([grant])
    assert state.elements == {
        ("auth4", f"198.19.0.5 . {MAC}", None),
        ("cnt_up4", f"198.19.0.5 . {MAC}", "up_s1"),
        ("cnt_down4", "198.19.0.5", "down_s1"),
    }
    assert state.objects == {("counter", "up_s1"): (), ("counter", "down_s1"): ()}


def test_ipv6_addresses_of_one_client_share_its_objects() -> None:
    grant = Grant("s1", MAC, ("198.19.0.5", "2001:db8::5", "2001:db8::6"),
                          quota_total=10**6)  # fmt: skip
    state = desired([grant])
    assert ("cnt_down6", "2001:db8::6", "down_s1") in state.elements
    assert ("quota_total_up6", f"2001:db8::5 . {MAC}", "qtotal_s1") in state.elements
    assert len([k for k in state.objects if k[0] == "quota"]) == 1


def test_diff_orders_one_transaction_and_keeps_what_it_can() -> None:
    old = Grant("s1", MAC, ("198.19.0.5",), quota_down=10**6, rate_up=1000)
    moved = Grant("s1", MAC, ("198.19.0.9",), quota_down=2 * 10**6, rate_up=2000)
    changes = diff(desired([moved]), desired([old]))
    text = change_commands(changes).splitlines()
    first_add = next(i for i, line in enumerate(text) if line.startswith("add"))
    assert all(line.startswith("delete") for line in text[:first_add])
    assert "delete limit inet plaza rup_s1" in text  # a limit cannot change in place
    assert "delete quota inet plaza qdown_s1" not in text  # a quota can: it keeps its use
    assert "add quota inet plaza qdown_s1 { over 2000000 bytes used 0 bytes }" in text
    assert 'add element inet plaza cnt_down4 { 198.19.0.9 : "down_s1" }' in text
    assert "delete element inet plaza cnt_down4 { 198.19.0.5 }" in text
    assert not any("counter" in line for line in text)  # counters stay: nothing is lost
    assert not diff(desired([moved]), desired([moved]))


def test_new_objects_start_from_carried_values() -> None:
    grant = Grant("s1", MAC, ("198.19.0.5",), quota_total=10**6)
    start = {"s1": Start(Usage(10, 1, 20, 2), {"total": 30})}
    text = ruleset.transaction(Config(), [grant], start=start)
    assert "add counter inet plaza up_s1 { packets 1 bytes 10 }" in text
    assert "add counter inet plaza down_s1 { packets 2 bytes 20 }" in text
    assert "add quota inet plaza qtotal_s1 { over 1000000 bytes used 30 bytes }" in text


LISTING = (
    '{"nftables": [{"metainfo": {"version": "1.0.6"}},'
    ' {"counter": {"family": "inet", "name": "up_s1", "table": "plaza", "packets": 5,'
    ' "bytes": 100}},'
    ' {"counter": {"family": "inet", "name": "down_s1", "table": "plaza", "packets": 7,'
    ' "bytes": 900}},'
    ' {"quota": {"family": "inet", "name": "qtotal_s1", "table": "plaza", "bytes": 1000,'
    ' "used": 1000, "inv": true}},'
    ' {"limit": {"family": "inet", "name": "rup_s1", "table": "plaza", "rate": 125000,'
    ' "per": "second", "inv": true, "rate_unit": "bytes", "burst": 15140,'
    ' "burst_unit": "bytes"}},'
    ' {"set": {"family": "inet", "name": "auth4", "table": "plaza", "type": ["ipv4_addr",'
    ' "ether_addr"], "elem": [{"concat": ["198.19.0.5", "02:00:00:00:00:05"]}]}},'
    ' {"set": {"family": "inet", "name": "garden4", "table": "plaza", "type": "ipv4_addr",'
    ' "elem": [{"elem": {"val": "192.0.2.20", "expires": 3599}}]}},'
    ' {"map": {"family": "inet", "name": "cnt_down4", "table": "plaza", "type": "ipv4_addr",'
    ' "map": "counter", "elem": [["198.19.0.5", "down_s1"]]}},'
    ' {"map": {"family": "inet", "name": "rate_up4", "table": "plaza", "type": ["ipv4_addr",'
    ' "ether_addr"], "map": "limit", "elem": [[{"concat": ["198.19.0.5",'
    ' "02:00:00:00:00:05"]}, "rup_s1"]]}}]}'
)


def test_kernel_state_from_nft_json() -> None:
    state = parse_state(LISTING)
    assert state.elements == {
        ("auth4", f"198.19.0.5 . {MAC}", None),
        ("cnt_down4", "198.19.0.5", "down_s1"),
        ("rate_up4", f"198.19.0.5 . {MAC}", "rup_s1"),
    }  # the garden set is not a client set
    assert state.objects == {
        ("counter", "up_s1"): (),
        ("counter", "down_s1"): (),
        ("quota", "qtotal_s1"): (1000,),
        ("limit", "rup_s1"): (125000, 15140),
    }


def test_readings_from_nft_json() -> None:
    (reading,) = parse_readings(LISTING, LISTING).values()
    assert reading.usage == Usage(bytes_up=100, packets_up=5, bytes_down=900, packets_down=7)
    assert reading.quotas["total"].exhausted


def test_authorized_pairs_skip_the_route_lookup_and_nothing_else_does() -> None:
    """Forwarding speed (docs/decisions.md): an authorized (address, MAC) pair returns from
    lan_antispoof before the reverse-path lookup; every other LAN source still meets it
    before it could be marked seen or sent to the detector."""
    rules = _chain(ruleset.render(Config()), "lan_antispoof")
    fib = rules.index("fib saddr . iif oif missing drop")
    assert rules.index("ip saddr . ether saddr @auth4 return") < fib
    assert rules.index("ip6 saddr . ether saddr @auth6 return") < fib
    assert fib < rules.index(
        "ip saddr . ether saddr != @seen4 meta mark set meta mark | 0x00800000"
    )
    assert fib < rules.index(
        "ip6 saddr . ether saddr != @seen6 meta mark set meta mark | 0x00800000"
    )
    assert fib < rules.index("jump garden_classify")


def test_an_authorized_packet_meets_one_forward_chain_and_one_more_on_prerouting() -> None:
    """Forwarding speed (docs/decisions.md, "three base chains"): every base chain costs every
    forwarded packet. Plaza's table hooks one chain on forward and one filter chain on
    prerouting; the queue hook adds one more on prerouting (gateway/garden/queue.py), none on
    forward. captive_dnat is a nat chain: walked for a connection's first packet only."""
    text = ruleset.render(Config())
    hooks = [line.strip() for line in text.splitlines() if line.strip().startswith("type ")]
    assert [h for h in hooks if "hook forward" in h] == [
        "type filter hook forward priority filter + 10; policy accept;"
    ]
    assert [h for h in hooks if "hook prerouting" in h] == [
        "type filter hook prerouting priority raw; policy accept;",
        "type nat hook prerouting priority dstnat; policy accept;",
    ]
    assert "hook forward" not in ruleset.queue_table()
