"""Alembic migrations, configured in code so `plaza-cloud migrate` needs no alembic.ini and works
from any directory (and from an installed package)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

# The plaza services' tables join `cloud.models.Base.metadata` when their package is imported;
# whoever migrates or compares the schema goes through here, so they always do.
import cloud.o2o  # noqa: F401
from cloud import transit as _transit  # noqa: F401  (its tables too)
from cloud.hospital import models as _hospital  # noqa: F401  (its reports)

HERE = Path(__file__).resolve().parent


def config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic config for this package. The URL travels in `attributes`, not in the ini
    options, which would treat a `%` in a password as interpolation."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["url"] = url
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(config(url), revision)


def current(url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    from cloud.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision: what `upgrade` brings a database to."""
    from alembic.script import ScriptDirectory

    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None
    return found
