"""The ledger (cloud/o2o/ledger.py): balanced postings only, each event once, and history that
cannot be rewritten, neither through the ORM nor around it (the database's triggers).
Every test runs on SQLite and PostgreSQL (tests/cloud/conftest.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from cloud import db as cloud_db
from cloud.o2o import ledger
from cloud.o2o.ledger import LedgerEntry, LedgerError, LedgerPosting

SALE = [(ledger.WALLET_CLEARING, 500), (ledger.merchant_receivable("mer_1"), -500)]


def test_a_posting_is_balanced_and_made_once_per_key(books: Flask):
    with cloud_db.session(books) as db:
        posting, made = ledger.post(db, "payment:pay_1:captured", "payment", SALE, 1.0)
        assert made
        again, made_again = ledger.post(db, "payment:pay_1:captured", "payment", SALE, 2.0)
        assert (again, made_again) == (posting, False)
        db.commit()
        assert ledger.balance(db, ledger.WALLET_CLEARING) == 500
        assert ledger.balances(db, "merchant-") == {ledger.merchant_receivable("mer_1"): -500}
        assert db.scalar(sa.select(sa.func.count()).select_from(LedgerEntry)) == 2
        assert ledger.check_balanced(db)


@pytest.mark.parametrize(
    "entries",
    [
        [(ledger.WALLET_CLEARING, 500), (ledger.merchant_receivable("mer_1"), -499)],
        [(ledger.WALLET_CLEARING, 500)],
        [(ledger.WALLET_CLEARING, 0), (ledger.merchant_receivable("mer_1"), 0)],
        [("", 5), ("x", -5)],
        [("a" * 65, 5), ("x", -5)],
    ],
)
def test_an_unbalanced_or_malformed_posting_is_refused(books: Flask, entries: list):
    with cloud_db.session(books) as db:
        with pytest.raises(LedgerError):
            ledger.post(db, "bad", "payment", entries, 1.0)
        db.commit()
        assert db.scalar(sa.select(sa.func.count()).select_from(LedgerPosting)) == 0


def test_history_cannot_be_changed_through_the_orm(books: Flask):
    with cloud_db.session(books) as db:
        ledger.post(db, "k1", "payment", SALE, 1.0)
        db.commit()
        entry = db.scalars(sa.select(LedgerEntry)).first()
        assert entry is not None
        entry.amount = 1
        with pytest.raises(LedgerError, match="append-only"):
            db.flush()
        db.rollback()
        posting = db.scalars(sa.select(LedgerPosting)).one()
        db.delete(posting)
        with pytest.raises(LedgerError, match="append-only"):
            db.flush()
        db.rollback()
        assert ledger.balance(db, ledger.WALLET_CLEARING) == 500


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = 0",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_postings SET key = 'other'",
        "DELETE FROM ledger_postings",
    ],
)
def test_history_cannot_be_changed_around_the_orm(books: Flask, statement: str):
    """A bulk statement or a hand-typed one meets the database's triggers."""
    with cloud_db.session(books) as db:
        ledger.post(db, "k1", "payment", SALE, 1.0)
        db.commit()
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            db.execute(sa.text(statement))
        db.rollback()
        assert ledger.balance(db, ledger.WALLET_CLEARING) == 500


def test_check_balanced_would_notice_an_unbalanced_posting(app: Flask):
    """The check the other tests rely on can fail: rows written around post() that do not
    balance, or a posting without entries, are reported (inserting is not blocked)."""
    with cloud_db.session(app) as db:
        assert ledger.check_balanced(db)
        db.execute(
            sa.insert(LedgerPosting).values(id=1, key="raw", kind="x", memo="", created_at=1.0)
        )
        db.commit()
        assert not ledger.check_balanced(db)  # a posting without entries
        db.execute(
            sa.insert(LedgerEntry).values(posting_id=1, account=ledger.WALLET_CLEARING, amount=7)
        )
        db.commit()
        assert not ledger.check_balanced(db)
