"""The names a rider reads for a feed's routes and stops, in the page's language.

A tap stores the ids the reader sent (`b1`, `s_plaza`); the rider's page shows what the feed
calls them: routes.txt's `route_short_name` (else `route_long_name`, else the id) and
stops.txt's `stop_name` (else the id), through translations.txt where the feed translates
them (GTFS: by `record_id`, or by `field_value` for every record with that name). Parsed once
per feed content, as the fare engine is (keyed by the files' digest: a feed row never
changes). An id the feed does not know (a reader configured with an old route, a tap from
before the feed changed) reads as itself: a name is a courtesy, never a reason to fail.

The names are user content from a feed file: they are only ever text in an autoescaped
template, never markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cloud.transit.feed import FeedError, Row, read_table
from cloud.transit.models import TransitFeed

TRANSLATIONS = "translations.txt"
REQUIRED = ("table_name", "field_name", "language", "translation")
# table_name -> (its file, its id column, the fields a rider reads, in order of preference)
TABLES = {
    "routes": ("routes.txt", "route_id", ("route_short_name", "route_long_name")),
    "stops": ("stops.txt", "stop_id", ("stop_name",)),
}


@dataclass
class Names:
    """A feed's route and stop names and their translations."""

    fields: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (table, id)
    by_record: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    by_value: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)

    def route(self, route_id: str, lang: str) -> str:
        return self._name("routes", route_id, lang)

    def stop(self, stop_id: str, lang: str) -> str:
        return self._name("stops", stop_id, lang)

    def _name(self, table: str, record: str, lang: str) -> str:
        given = self.fields.get((table, record), {})
        for name in TABLES[table][2]:
            value = given.get(name)
            if value:
                key = (table, name, record)
                found = self.by_record.get(key) or self.by_value.get((table, name, value), {})
                return pick(found, lang) or value
        return record


_NAMES: dict[str, Names] = {}  # by the feed's digest


def pick(translations: Mapping[str, str], lang: str) -> str | None:
    """The translation for `lang` (BCP 47, as the page's `zh-CN`): the same tag, else the
    bare language (`zh`), else another of that language (`zh-Hans`); None if none."""
    wanted = lang.lower()
    primary = wanted.split("-")[0]
    by_tag = {tag.lower(): text for tag, text in translations.items()}
    if wanted in by_tag or primary in by_tag:
        return by_tag.get(wanted) or by_tag[primary]
    same = sorted(tag for tag in by_tag if tag.split("-")[0] == primary)
    return by_tag[same[0]] if same else None


def parse_names(texts: Mapping[str, str]) -> Names:
    """The names in a feed's files (name -> text); FeedError for a translations.txt that
    names a route or stop the feed does not have, or neither a record nor a value."""
    names = Names()
    for table, (file, id_column, columns) in TABLES.items():
        for row in read_table(file, texts[file], (id_column,)):
            values = {column: row.get(column) for column in columns if row.get(column)}
            names.fields[(table, row.get(id_column))] = values
    if TRANSLATIONS in texts:
        for row in read_table(TRANSLATIONS, texts[TRANSLATIONS], REQUIRED):
            _translation(names, row)
    return names


def _translation(names: Names, row: Row) -> None:
    table, name = row.get("table_name"), row.get("field_name")
    if table not in TABLES or name not in TABLES[table][2]:
        return  # agency, trips, ...: nothing a rider's page shows
    lang, text = row.get("language"), row.get("translation")
    record, value = row.get("record_id"), row.get("field_value")
    if not (lang and text):
        raise FeedError(TRANSLATIONS, row.line, "language" if not lang else "translation",
                        "empty, but required")  # fmt: skip
    if record:
        if (table, record) not in names.fields:
            raise FeedError(TRANSLATIONS, row.line, "record_id", f"unknown {table} {record!r}")
        names.by_record.setdefault((table, name, record), {})[lang] = text
    elif value:
        names.by_value.setdefault((table, name, value), {})[lang] = text
    else:
        raise FeedError(TRANSLATIONS, row.line, "record_id", "record_id or field_value required")


def names_for(feed: TransitFeed) -> Names:
    """A stored feed's names, parsed once per process for each feed content."""
    found = _NAMES.get(feed.digest)
    if found is None:
        found = _NAMES[feed.digest] = parse_names(feed.files)
    return found
