"""Run the Alembic migrations (``ehr-service migrate``): a step of its own,
never a side effect of importing or starting the app."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ehr_service.storage.database import Database


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database: Database, migrations_dir: Path, revision: str = "head") -> None:
    config = alembic_config(migrations_dir, database.url)
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(database: Database, migrations_dir: Path, revision: str) -> None:
    config = alembic_config(migrations_dir, database.url)
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def partition_database(database: Database, partitions: int) -> list[str]:
    """``migrate --partitions N``: the scale-out layout, a schema change like the
    migrations (storage.partitioning); returns the tables changed."""
    from ehr_service.storage.partitioning import partition

    with database.engine.begin() as conn:
        return partition(conn, partitions)


def install_audit_guard(database: Database) -> None:
    """``audit guard``: re-create the triggers over the audit trail (a schema change)."""
    from ehr_service.storage import audit_guard

    with database.engine.begin() as conn:
        audit_guard.install(conn)


def distribute_database(database: Database) -> list[str]:
    """``migrate --citus``: the Citus layout (storage.citus); returns the tables
    distributed or made reference tables."""
    from ehr_service.storage.citus import distribute

    with database.engine.begin() as conn:
        return distribute(conn)


def is_at_head(database: Database, migrations_dir: Path) -> bool:
    """True when the database schema is at the newest migration."""
    script = ScriptDirectory.from_config(alembic_config(migrations_dir, database.url))
    with database.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == set(script.get_heads())
