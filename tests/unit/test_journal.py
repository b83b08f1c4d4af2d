"""The snapshot journal (gateway/dataplane/journal.py) that the kernel's firewall and its test
double share: commits are kept only while a snapshot is open, each snapshot sees what came
after its own mark, and only the last one to close ends the journal."""

from __future__ import annotations

from gateway.dataplane.grants import Changes
from gateway.dataplane.journal import Journal

ONE = Changes(del_objects=(("counter", "up_1"),))
TWO = Changes(del_objects=(("counter", "up_2"),))


def test_nothing_is_kept_while_no_snapshot_is_open() -> None:
    journal = Journal()
    journal.record(ONE)
    assert not journal.active
    assert journal.since(0) == []
    mark = journal.open()
    assert journal.active and mark == 0
    assert journal.since(mark) == []


def test_each_snapshot_sees_what_came_after_its_mark() -> None:
    journal = Journal()
    first = journal.open()
    journal.record(ONE)
    second = journal.open()
    journal.record(None)  # the whole table was replaced
    journal.record(TWO)
    assert journal.since(first) == [ONE, None, TWO]
    assert journal.since(second) == [None, TWO]


def test_only_the_last_snapshot_to_close_ends_the_journal() -> None:
    journal = Journal()
    journal.open()
    journal.open()
    journal.record(ONE)
    assert journal.close() is False
    assert journal.active and journal.since(0) == [ONE]
    assert journal.close() is True
    assert not journal.active and journal.since(0) == []
    assert journal.open() == 0  # a new journal starts empty
