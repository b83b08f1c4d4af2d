"""The cloud's books: an append-only double-entry ledger in fen (1/100 yuan).

Every movement of money (a payment captured, a refund, a voucher issued or used) is one
posting: a set of entries on named accounts whose amounts sum to zero (debits positive,
credits negative). Nothing is ever corrected in place: a mistake is undone by a reversing
posting, so the ledger is its own audit trail. Three guards keep it so:

- `post()` refuses an unbalanced set, and a posting `key` is unique, so the same event posted
  twice (a duplicated notify, a retried request, two instances racing) is posted once;
- a session that would UPDATE or DELETE a posting or entry fails at flush (`_refuse_changes`);
- the database refuses it too: triggers from migration 0007 on PostgreSQL and SQLite, for
  whatever goes around the ORM (a bulk UPDATE, a psql session).

Accounts are strings: `shopper-wallet-clearing` (money the wallet holds for the plaza),
`merchant-receivable:<merchant>` (what the plaza owes a merchant for their sales),
`refunds:<merchant>` (money given back on their behalf), `voucher-liability:<merchant>` (the
value of vouchers claimed and not yet used).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, String, event, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.db import dialect_insert
from cloud.models import Base, BigId

WALLET_CLEARING = "shopper-wallet-clearing"
MAX_ACCOUNT = 64


def merchant_receivable(merchant_id: str) -> str:
    return f"merchant-receivable:{merchant_id}"


def refunds(merchant_id: str) -> str:
    return f"refunds:{merchant_id}"


def voucher_liability(merchant_id: str) -> str:
    return f"voucher-liability:{merchant_id}"


class LedgerError(ValueError):
    """A posting that would break the books: unbalanced, empty, or a change to history."""


class LedgerPosting(Base):
    """One event in the books. `key` names the event (`payment:pay_...:captured`), so the same
    event can never be posted twice."""

    __tablename__ = "ledger_postings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # payment | refund | voucher-... (reports)
    memo: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[float] = mapped_column(Float)


class LedgerEntry(Base):
    """One line of a posting: `amount` fen on `account`, debit positive, credit negative."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    posting_id: Mapped[int] = mapped_column(ForeignKey("ledger_postings.id"), index=True)
    account: Mapped[str] = mapped_column(String(MAX_ACCOUNT), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)


def post(
    db: Session,
    key: str,
    kind: str,
    entries: Iterable[tuple[str, int]],
    at: float,
    memo: str = "",
) -> tuple[int, bool]:
    """Post `entries` under `key` in the caller's transaction: (posting id, True), or the id
    of the posting already made under `key` and False (nothing added, even when a twin in
    another transaction is inserting it right now: ON CONFLICT waits for it and yields).
    LedgerError if they do not balance."""
    lines = _checked(key, entries)
    postings = LedgerPosting.__table__
    insert = (
        dialect_insert(db, postings)
        .values(key=key, kind=kind, memo=memo[:200], created_at=at)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(postings.c.id)
    )
    posting_id = db.execute(insert).scalar()
    if posting_id is None:
        return db.scalars(select(LedgerPosting.id).where(LedgerPosting.key == key)).one(), False
    db.execute(
        LedgerEntry.__table__.insert(),
        [{"posting_id": posting_id, "account": a, "amount": n} for a, n in lines],
    )
    return posting_id, True


def _checked(key: str, entries: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    lines = [(account, int(amount)) for account, amount in entries if amount]
    if len(lines) < 2 or sum(amount for _, amount in lines) != 0:
        raise LedgerError(f"posting {key!r} does not balance: {lines}")
    if any(not account or len(account) > MAX_ACCOUNT for account, _ in lines):
        raise LedgerError(f"posting {key!r} names an invalid account")
    return lines


def post_many(
    db: Session, kind: str, postings: Iterable[tuple[str, list[tuple[str, int]], str]], at: float
) -> int:
    """`post` for many events of one kind, (key, entries, memo) each, in two statements
    instead of two per posting (the transit charge pass posts thousands a second). A key
    already posted is skipped as `post` skips it; how many postings were made."""
    checked = {key: (_checked(key, entries), memo) for key, entries, memo in postings}
    if not checked:
        return 0
    memos = [memo[:200] for _, memo in checked.values()]
    table = LedgerPosting.__table__
    if db.get_bind().dialect.name == "postgresql":  # arrays: not a statement of 10,000 values
        arrays = {"keys": list(checked), "memos": memos, "kind": kind, "at": at}
        posted = db.execute(PG_POSTINGS, arrays).all()
    else:
        insert = dialect_insert(db, table).on_conflict_do_nothing(index_elements=["key"])
        rows = [{"key": key, "kind": kind, "memo": memo, "created_at": at}
                for key, memo in zip(checked, memos, strict=True)]  # fmt: skip
        posted = db.execute(insert.returning(table.c.id, table.c.key), rows).all()
    lines = [(i, *line) for i, key in posted for line in checked[key][0]]
    if lines:
        ids, accounts, amounts = (list(column) for column in zip(*lines, strict=True))
        if db.get_bind().dialect.name == "postgresql":
            db.execute(PG_ENTRIES, {"ids": ids, "accounts": accounts, "amounts": amounts})
        else:
            rows = [{"posting_id": i, "account": a, "amount": n} for i, a, n in lines]
            db.execute(LedgerEntry.__table__.insert(), rows)
    return len(posted)


PG_POSTINGS = text(
    "INSERT INTO ledger_postings (key, kind, memo, created_at) SELECT u.key, :kind, u.memo, :at "
    "FROM unnest(CAST(:keys AS text[]), CAST(:memos AS text[])) AS u(key, memo) "
    "ON CONFLICT (key) DO NOTHING RETURNING id, key"
)
PG_ENTRIES = text(
    "INSERT INTO ledger_entries (posting_id, account, amount) SELECT * FROM "
    "unnest(CAST(:ids AS bigint[]), CAST(:accounts AS text[]), CAST(:amounts AS bigint[]))"
)


def balance(db: Session, account: str) -> int:
    """The account's balance in fen (debits minus credits)."""
    total = db.scalar(select(func.sum(LedgerEntry.amount)).where(LedgerEntry.account == account))
    return int(total or 0)


def balances(db: Session, prefix: str = "") -> dict[str, int]:
    """Every account (starting with `prefix`) and its balance."""
    query = select(LedgerEntry.account, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.account)
    if prefix:
        query = query.where(LedgerEntry.account.startswith(prefix, autoescape=True))
    return {account: int(total) for account, total in db.execute(query)}


def check_balanced(db: Session) -> bool:
    """Whether the books balance: every posting sums to zero (so the whole ledger does), and
    no posting is without entries."""
    unbalanced = db.scalar(
        select(func.count()).select_from(
            select(LedgerEntry.posting_id)
            .group_by(LedgerEntry.posting_id)
            .having(func.sum(LedgerEntry.amount) != 0)
            .subquery()
        )
    )
    empty = db.scalar(
        select(func.count())
        .select_from(LedgerPosting)
        .where(~select(LedgerEntry.id).where(LedgerEntry.posting_id == LedgerPosting.id).exists())
    )
    total = db.scalar(select(func.sum(LedgerEntry.amount)))
    return unbalanced == 0 and empty == 0 and int(total or 0) == 0


@event.listens_for(Session, "before_flush")
def _refuse_changes(session: Session, _context: Any, _instances: Any) -> None:
    """History is never rewritten through the ORM: a changed or deleted posting or entry
    fails the flush (and so the transaction)."""
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, LedgerPosting | LedgerEntry) and (
            obj in session.deleted or session.is_modified(obj)
        ):
            raise LedgerError("the ledger is append-only: post a reversal instead")
