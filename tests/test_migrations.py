"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL,
and step down and up again cleanly."""

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from guanhao import migrate
from guanhao.models import Base


def test_migrated_schema_matches_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_downgrade_to_the_first_revision_and_back(engine):
    cfg = migrate.config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    with engine.connect() as conn:
        assert "pending_changes" not in sa.inspect(conn).get_table_names()
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert "pending_changes" in sa.inspect(conn).get_table_names()
