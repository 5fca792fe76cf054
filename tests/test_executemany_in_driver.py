"""store.base.executemany_in_driver: the driver's own executemany, refusing what
SQLAlchemy's path would refuse (review of 4aed76a) instead of writing it differently."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
)

from mailer.store.base import driver_values, executemany_in_driver

_TABLE = Table(
    "t",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String),
    Column("at", DateTime(timezone=True)),
)
_INSERT = insert(_TABLE).values(
    id=bindparam("b_id"), name=bindparam("b_name"), at=bindparam("b_at")
)
WHEN = datetime(2031, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


def test_rows_are_written_as_sqlalchemy_writes_them() -> None:
    engine = create_engine("sqlite://")
    _TABLE.metadata.create_all(engine)
    with engine.begin() as connection:
        when = driver_values(connection, _TABLE.c.at.type)
        executemany_in_driver(connection, _INSERT, [{"b_id": 1, "b_name": "a", "b_at": when(WHEN)}])
        connection.execute(_INSERT, [{"b_id": 2, "b_name": "a", "b_at": WHEN}])
        raw = connection.exec_driver_sql("SELECT at FROM t ORDER BY id").scalars().all()
        assert raw[0] == raw[1]  # the same stored text
        assert connection.execute(select(_TABLE.c.at)).scalars().all()[0] == WHEN.replace(
            tzinfo=None
        )


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"b_id": 1, "b_name": "a"}, "no value for b_at"),  # NULL, where SQLAlchemy refuses
        ({"b_id": 1, "b_name": "a", "b_at": WHEN}, "driver_values"),  # the driver's format
    ],
)
def test_what_sqlalchemy_would_refuse_is_refused(row: dict[str, object], error: str) -> None:
    engine = create_engine("sqlite://")
    _TABLE.metadata.create_all(engine)
    with engine.begin() as connection:
        with pytest.raises((ValueError, TypeError), match=error):
            executemany_in_driver(connection, _INSERT, [row])
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
