"""Alembic environment: the models' metadata is the target; the URL or an open connection
comes from `cloud.migrations.config()`."""

from __future__ import annotations

from alembic import context

from cloud.db import make_engine
from cloud.models import Base
from cloud.o2o import ledger, payments, shoppers, voucher_models  # noqa: F401  (tables join Base)
from cloud.transit import models as transit_models  # noqa: F401  (tables join Base)

target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    attributes = context.config.attributes
    connection = attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = attributes.get("url")
    if not url:
        raise RuntimeError("no database URL: use cloud.migrations.config(url)")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
