"""The GTFS Fares v2 engine (cloud/transit/fares.py) and the feed checks (feed.py).

The transfer cases encode the worked examples of the GTFS reference, fare_transfer_rules.txt
(https://gtfs.org/schedule/reference/#fare_transfer_rulestxt; the same text in
MobilityData/gtfs.org docs and google/transit gtfs/spec/en/reference.md): the cost table
for 2 and 3 legs (type 0: A + AB then S + BC; type 1: A + AB + B then S + BC + C; type 2: AB
then S + BC), the rule that picks the smallest transfer_count at or above the sub-journey's,
the empty from/to leg group that stands for every group not listed, and the
duration_limit_type definitions. The leg cases follow fare_leg_rules.txt's matching (an empty
network or area matches only when no rule names the leg's; rule_priority keeps the highest).
"""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from cloud.transit.fares import FareEngine, FareError, legs_from_json
from cloud.transit.feed import FILES, FeedError, load_feed, parse_feed

CITY = Path(__file__).resolve().parents[1] / "fixtures" / "gtfs_city"
DAY = "2026-12-07T"  # a Monday


def leg(route: str, stop: str, dep: str, arr: str | None = None, to: str | None = None) -> dict:
    times = {"departure": DAY + dep + "+08:00", "arrival": DAY + (arr or dep) + "+08:00"}
    return {"route_id": route, "from_stop_id": stop, "to_stop_id": to, **times}


def city() -> FareEngine:
    return FareEngine(load_feed(CITY))


def total(engine: FareEngine, *legs: dict) -> str:
    return engine.quote(legs_from_json({"legs": list(legs)})).as_json()["total"]["amount"]


# -- a minimal feed built per test -----------------------------------------------------------


def feed_files(products: dict[str, str], leg_rules: list[str], transfer_rules: list[str],
               routes: tuple[str, ...] = ("a", "b", "c")) -> dict[str, str]:  # fmt: skip
    """One network per route (route r in network r, leg group r) unless rules say otherwise."""
    return {
        "routes.txt": "route_id\n" + "".join(f"{r}\n" for r in routes),
        "stops.txt": "stop_id,parent_station\ns1,\ns2,\nst,\ns3,st\n",
        "networks.txt": "network_id\n" + "".join(f"n{r}\n" for r in routes),
        "route_networks.txt": "network_id,route_id\n" + "".join(f"n{r},{r}\n" for r in routes),
        "areas.txt": "area_id\nz1\nz2\n",
        "stop_areas.txt": "area_id,stop_id\nz1,s1\nz2,s2\nz1,st\n",
        "timeframes.txt": "timeframe_group_id,start_time,end_time,service_id\n"
        "peak,07:00:00,09:00:00,wk\n",
        "fare_media.txt": "fare_media_id,fare_media_type\ncard,2\n",
        "fare_products.txt": "fare_product_id,amount,currency\n"
        + "".join(f"{k},{v},CNY\n" for k, v in products.items()),
        "fare_leg_rules.txt": "leg_group_id,network_id,from_area_id,to_area_id,"
        "from_timeframe_group_id,to_timeframe_group_id,fare_product_id,rule_priority\n"
        + "".join(line + "\n" for line in leg_rules),
        "fare_transfer_rules.txt": "from_leg_group_id,to_leg_group_id,transfer_count,"
        "duration_limit,duration_limit_type,fare_transfer_type,fare_product_id\n"
        + "".join(line + "\n" for line in transfer_rules),
    }


ABC = {"A": "2.00", "B": "3.00", "C": "4.00", "AB": "1.00", "BC": "0.50"}
ABC_LEGS = ["a,na,,,,,A,", "b,nb,,,,,B,", "c,nc,,,,,C,"]


def abc(kind: int) -> FareEngine:
    files = feed_files(ABC, ABC_LEGS, [f"a,b,,,,{kind},AB", f"b,c,,,,{kind},BC"])
    return FareEngine(parse_feed(files))


@pytest.mark.parametrize(
    ("kind", "two_legs", "three_legs"),
    [
        (0, "3.00", "3.50"),  # A + AB = 2 + 1; S + BC = 3 + 0.5
        (1, "6.00", "10.50"),  # A + AB + B = 2 + 1 + 3; S + BC + C = 6 + 0.5 + 4
        (2, "1.00", "1.50"),  # AB = 1; S + BC = 1 + 0.5
    ],
)
def test_the_reference_cost_table_for_two_and_three_legs(kind, two_legs, three_legs):
    """fare_transfer_rules.txt, fare_transfer_type: 'Cost processing interactions between
    multiple transfers in a journey' (A > B, then B > C, S the cost so far)."""
    engine = abc(kind)
    a, b, c = leg("a", "s1", "08:00"), leg("b", "s1", "08:10"), leg("c", "s1", "08:20")
    assert total(engine, a, b) == two_legs
    assert total(engine, a, b, c) == three_legs
    per_leg = engine.quote(legs_from_json({"legs": [a, b, c]})).as_json()["legs"]
    assert sum(Decimal(x["amount"]) for x in per_leg) == Decimal(three_legs)


def test_without_a_transfer_rule_legs_are_priced_separately():
    """Step 5: no matching transfer rule, the legs are separate (A + C)."""
    assert total(abc(0), leg("a", "s1", "08:00"), leg("c", "s1", "08:10")) == "6.00"


def test_the_smallest_transfer_count_at_or_above_the_journeys_is_chosen():
    """transfer_count: 'the rule with the minimum transfer_count that is greater than or
    equal to the current transfer count of the sub-journey is to be selected'; past the
    last limit, the next leg starts a new sub-journey."""
    files = feed_files(
        {"A": "2.00", "T1": "0.00", "T2": "0.50"}, ["a,na,,,,,A,"],
        ["a,a,1,,,0,T1", "a,a,2,,,0,T2"],
    )  # fmt: skip
    engine = FareEngine(parse_feed(files))
    rides = [leg("a", "s1", f"08:{m:02d}") for m in (0, 10, 20, 30)]
    assert total(engine, *rides[:2]) == "2.00"  # first transfer free (count 1)
    assert total(engine, *rides[:3]) == "2.50"  # second costs T2 (count 2)
    assert total(engine, *rides) == "4.50"  # a third transfer matches nothing: A again


def test_an_empty_leg_group_means_every_group_not_listed():
    """from_leg_group_id / to_leg_group_id: an empty entry corresponds to all leg groups
    excluding those listed."""
    files = feed_files(ABC, ABC_LEGS, ["a,b,,,,0,AB", ",c,,,,0,BC"])
    engine = FareEngine(parse_feed(files))
    assert total(engine, leg("b", "s1", "08:00"), leg("c", "s1", "08:10")) == "3.50"  # B + BC
    # a is listed as a from group (a > b), so the empty from does not stand for it
    assert total(engine, leg("a", "s1", "08:00"), leg("c", "s1", "08:10")) == "6.00"


@pytest.mark.parametrize(
    ("limit_type", "within"),
    [(0, False), (1, True), (2, True), (3, False)],
)
def test_duration_limit_types(limit_type, within):
    """duration_limit_type 0: departure to next arrival; 1: departure to next departure;
    2: arrival to next departure; 3: arrival to next arrival. First leg 08:00-08:20, second
    08:40-09:10, limit 45 minutes: 40 and 20 minutes fit, 70 and 50 do not."""
    files = feed_files(ABC, ABC_LEGS, [f"a,b,,2700,{limit_type},0,AB"])
    engine = FareEngine(parse_feed(files))
    journey = (leg("a", "s1", "08:00", "08:20"), leg("b", "s1", "08:40", "09:10"))
    assert total(engine, *journey) == ("3.00" if within else "5.00")


def test_leg_rules_by_area_with_the_exclusion_rule_and_parent_stations():
    """An empty from/to area matches only when no rule names one of the stop's areas; a stop
    takes its parent station's areas."""
    files = feed_files(
        {"Z11": "3.00", "Z12": "5.00", "ANY": "6.00"},
        ["m,na,z1,z1,,,Z11,", "m,na,z1,z2,,,Z12,", "m,na,,,,,ANY,"], [],
    )  # fmt: skip
    engine = FareEngine(parse_feed(files))
    assert total(engine, leg("a", "s3", "08:00", to="s1")) == "3.00"  # s3 is in st: z1
    assert total(engine, leg("a", "s1", "08:00", to="s2")) == "5.00"
    assert total(engine, leg("a", "s2", "08:00")) == "6.00"  # from z2 (no rule names it)
    with pytest.raises(FareError, match="no fare leg rule"):  # z2 is a named to-area, so the
        engine.quote(legs_from_json({"legs": [leg("a", "s2", "08:00", to="s2")]}))  # empty one


def test_timeframes_and_rule_priority():
    files = feed_files(
        {"BASE": "2.00", "PEAK": "3.00"}, ["a,na,,,,,BASE,0", "a,na,,,peak,,PEAK,1"], []
    )
    engine = FareEngine(parse_feed(files))
    assert total(engine, leg("a", "s1", "08:30")) == "3.00"  # the higher priority wins
    assert total(engine, leg("a", "s1", "09:00")) == "2.00"  # end is exclusive


def test_the_city_feed_bus_transfer_within_90_minutes():
    engine = city()
    assert total(engine, leg("b1", "s_square", "08:00"), leg("b2", "s_harbour", "09:29")) == "2.00"
    assert total(engine, leg("b1", "s_square", "08:00"), leg("b2", "s_harbour", "09:31")) == "4.00"
    assert total(engine, leg("b1", "s_square", "21:00")) == "1.00"  # evening timeframe
    assert (
        total(engine, leg("b1", "s_square", "08:00"), leg("m1", "m_central", "08:30",
                                                         "08:45", "m_harbour"))
        == "3.00"
    )  # fmt: skip


def test_a_journey_it_cannot_price_is_refused():
    engine = city()
    with pytest.raises(FareError, match="unknown route"):
        engine.quote(legs_from_json({"legs": [leg("zz", "s_square", "08:00")]}))
    with pytest.raises(FareError, match="no fare leg rule"):
        engine.quote(legs_from_json({"legs": [leg("m1", "s_square", "08:00")]}))
    with pytest.raises(FareError, match="no UTC offset"):
        legs_from_json({"legs": [{"route_id": "b1", "from_stop_id": "x",
                                  "departure": "2026-12-07T08:00:00"}]})  # fmt: skip


# -- bad feeds -------------------------------------------------------------------------------


def broken(tmp_path: Path, name: str, text: str | None) -> Path:
    root = tmp_path / "feed"
    shutil.copytree(CITY, root)
    if text is None:
        (root / name).unlink()
    else:
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_missing_file_is_named(tmp_path, name):
    with pytest.raises(FeedError, match=f"^{name}: required file missing"):
        load_feed(broken(tmp_path, name, None))


def test_a_bad_column_is_named_with_file_line_and_field(tmp_path):
    text = "fare_product_id,amount,currncy\nbus_fare,2.00,CNY\n"
    with pytest.raises(FeedError) as caught:
        load_feed(broken(tmp_path, "fare_products.txt", text))
    assert str(caught.value) == "fare_products.txt line 1, currency: required column missing"
    text = "fare_product_id,amount,currency\nbus_fare,two,CNY\n"
    with pytest.raises(FeedError, match=r"fare_products.txt line 2, amount: 'two' is not"):
        load_feed(broken(tmp_path / "b", "fare_products.txt", text))


def test_an_unknown_reference_is_named(tmp_path):
    rules = (CITY / "fare_leg_rules.txt").read_text() + "bus,tram,,,,,bus_fare\n"
    with pytest.raises(FeedError) as caught:
        load_feed(broken(tmp_path, "fare_leg_rules.txt", rules))
    assert str(caught.value) == "fare_leg_rules.txt line 10, network_id: unknown network 'tram'"


def test_a_circular_transfer_rule_is_refused(tmp_path):
    text = (
        "from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,duration_limit_type,"
        "fare_transfer_type,fare_product_id\nbus,metro,,,,0,\nmetro,bus,,,,0,\n"
    )
    with pytest.raises(FeedError) as caught:
        load_feed(broken(tmp_path, "fare_transfer_rules.txt", text))
    assert str(caught.value) == (
        "fare_transfer_rules.txt line 3, to_leg_group_id: circular transfer rule: "
        "bus -> metro -> bus with no duration_limit"
    )
    text = text.replace("metro,bus,,,,0,", "metro,bus,,3600,1,0,")  # bounded in time: fine
    load_feed(broken(tmp_path / "ok", "fare_transfer_rules.txt", text))


def test_transfer_count_rules_of_the_reference(tmp_path):
    base = ("from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,"
            "duration_limit_type,fare_transfer_type,fare_product_id\n")  # fmt: skip
    with pytest.raises(FeedError, match="line 2, transfer_count: required when from = to"):
        load_feed(broken(tmp_path, "fare_transfer_rules.txt", base + "bus,bus,,,,0,\n"))
    with pytest.raises(FeedError, match="line 2, transfer_count: forbidden when from != to"):
        load_feed(broken(tmp_path / "b", "fare_transfer_rules.txt", base + "bus,metro,1,,,0,\n"))
    with pytest.raises(FeedError, match="duration_limit_type: required with duration_limit"):
        load_feed(broken(tmp_path / "c", "fare_transfer_rules.txt", base + "bus,metro,,60,,0,\n"))


def test_quote_cli_prints_json_and_refuses_with_a_message(tmp_path, capsys):
    from cloud.cli import main

    journey = tmp_path / "legs.json"
    journey.write_text(json.dumps({"legs": [leg("b1", "s_square", "08:00"),
                                            leg("b2", "s_harbour", "08:30")]}))  # fmt: skip
    assert main(["transit", "quote", str(CITY), "--legs", str(journey)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"] == {"amount": "2.00", "currency": "CNY"}
    assert [x["fare_product_id"] for x in out["legs"]] == ["bus_fare", "bus_fare"]
    assert [x["amount"] for x in out["legs"]] == ["2.00", "0.00"]
    journey.write_text(json.dumps({"legs": [leg("nope", "s_square", "08:00")]}))
    assert main(["transit", "quote", str(CITY), "--legs", str(journey)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "unknown route 'nope'" in captured.err
