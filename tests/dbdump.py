"""Every row of every table as text: to prove a refused request changed nothing (R-63) and that no
personal data sits in the database in clear (R-50)."""

import sqlalchemy as sa


def table_names(engine) -> list[str]:
    return sorted(n for n in sa.inspect(engine).get_table_names() if n != "alembic_version")


def snapshot(engine, *, exclude: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """{table: sorted rows as text}."""
    out = {}
    with engine.connect() as conn:
        for name in table_names(engine):
            if name in exclude:
                continue
            if engine.dialect.name == "postgresql":
                rows = conn.execute(sa.text(f'SELECT row_to_json(t)::text FROM "{name}" t')).scalars().all()
            else:
                rows = [repr(tuple(r)) for r in conn.execute(sa.text(f'SELECT * FROM "{name}"'))]
            out[name] = sorted(rows)
    return out


def changed_tables(before: dict, after: dict) -> list[str]:
    return sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
