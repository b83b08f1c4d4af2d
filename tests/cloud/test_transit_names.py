"""The names a rider reads for routes and stops (cloud/transit/names.py): the feed's names,
their translations picked for the page's language, ids where the feed has no name. Pure: no
database (the page itself: tests/cloud/test_transit_cards.py)."""

from __future__ import annotations

import pytest

from cloud.transit.feed import FeedError, read_files
from cloud.transit.models import TransitFeed
from cloud.transit.names import names_for, parse_names, pick
from tests.cloud.transit_helpers import CITY

HEADER = "table_name,field_name,language,translation,record_id,field_value\n"


def city(translations: str | None = None) -> dict[str, str]:
    files = read_files(CITY)
    if translations is not None:
        files["translations.txt"] = HEADER + translations
    return files


@pytest.mark.parametrize(
    ("lang", "want"),
    [
        ("zh-CN", "简"),
        ("zh-cn", "简"),
        ("zh-TW", "繁"),
        ("zh-HK", "汉"),
        ("zh", "汉"),
        ("en", None),
    ],
)
def test_a_translation_is_picked_by_tag_then_language(lang: str, want: str | None):
    assert pick({"zh-CN": "简", "zh-TW": "繁", "zh": "汉"}, lang) == want
    assert pick({"zh-TW": "繁", "zh-Hans": "汉"}, "zh-CN") == "汉"  # the first by tag order


def test_names_fall_back_from_short_to_long_to_id_and_unknown_ids_read_as_themselves():
    names = parse_names(city())
    assert names.route("m1", "en") == "M1" and names.stop("m_central", "en") == "Central (metro)"
    assert names.route("gone", "en") == "gone" and names.stop("gone", "zh-CN") == "gone"
    files = city()
    files["routes.txt"] = "route_id,route_short_name,route_long_name\nb1,,Square line\nb2,,\n"
    assert parse_names(files).route("b1", "en") == "Square line"
    assert parse_names(files).route("b2", "en") == "b2"


def test_a_translation_by_record_wins_over_one_by_value_and_other_tables_are_ignored():
    names = parse_names(
        city(
            "stops,stop_name,zh,广场,s_square,\nstops,stop_name,zh,某广场,,Square\n"
            "stops,stop_name,zh,港口,,Harbour\ntrips,trip_headsign,zh,往港口,t1,\n"
        )
    )
    assert names.stop("s_square", "zh-CN") == "广场"
    assert names.stop("s_harbour", "zh-CN") == "港口"
    assert names.stop("s_harbour", "en") == "Harbour"  # no English translation: as given
    assert names.stop("m_harbour", "zh-CN") == "Harbour (metro)"  # another value


@pytest.mark.parametrize(
    ("rows", "where"),
    [
        ("routes,route_short_name,zh,9路,b9,\n", "line 2, record_id: unknown routes 'b9'"),
        ("stops,stop_name,zh,广场,,\n", "line 2, record_id: record_id or field_value"),
        ("stops,stop_name,,广场,s_square,\n", "line 2, language: empty"),
    ],
)
def test_a_translation_that_cannot_be_placed_names_its_line(rows: str, where: str):
    with pytest.raises(FeedError, match=where):
        parse_names(city(rows))


def test_a_translations_file_without_its_columns_is_refused():
    files = city()
    files["translations.txt"] = "table_name,field_name,translation\n"
    with pytest.raises(FeedError, match=r"translations\.txt line 1, language: required column"):
        parse_names(files)


def test_names_are_parsed_once_per_feed_content():
    """Keyed by the files' digest, as the fare engine is: two rows with one content share."""
    files = city("stops,stop_name,zh,广场,s_square,\n")
    one = TransitFeed(id=1, digest="d" * 64, files=files)
    assert names_for(one) is names_for(TransitFeed(id=2, digest="d" * 64, files=files))
    assert names_for(TransitFeed(id=1, digest="e" * 64, files=city())) is not names_for(one)
