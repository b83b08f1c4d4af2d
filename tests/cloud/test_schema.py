"""The migrations and the models describe the same schema, on both databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cloud import migrations
from cloud.db import make_engine
from cloud.models import Base
from lab.postgres import PostgresCluster, PostgresUnavailable


def test_upgrade_head_matches_the_models(db_url: str):
    engine = make_engine(db_url)  # db_url is already at head (migrated template)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert (
                context.get_current_revision()
                == ScriptDirectory.from_config(migrations.config()).get_current_head()
            )
            assert compare_metadata(context, Base.metadata) == []
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables


def test_downgrade_to_base_and_back(db_url: str):
    command.downgrade(migrations.config(db_url), "base")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrations.upgrade(db_url)
    assert migrations.current(db_url) == migrations.head()


def test_compare_would_notice_a_drift(db_url: str):
    """The check above can fail: a model column the migrations lack is reported."""
    metadata = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["devices"].append_column(sa.Column("colour", sa.String(8)))
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert [d[0] for d in diffs] == ["add_column"]


def test_missing_postgres_binaries_fail_with_a_clear_message(monkeypatch):
    """The fixture turns this into a test failure (not a skip); the message names the fix."""
    monkeypatch.setenv("PLAZA_PG_BIN", "/nonexistent/bin")
    with pytest.raises(PostgresUnavailable, match="install Debian's `postgresql` package"):
        PostgresCluster()
