"""What every query mixin may assume about the Store it is mixed into."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, insert, select

from mailer.clock import utcnow
from mailer.errors import NotFoundError
from mailer.store.schema import lists


class StoreBase:
    engine: Engine

    def _list_id(self, connection: Connection, name: str) -> int:
        found = connection.execute(select(lists.c.id).where(lists.c.name == name)).scalar()
        if found is None:
            names = connection.execute(select(lists.c.name).order_by(lists.c.name)).scalars()
            known = ", ".join(names) or "none yet"
            raise NotFoundError(
                f"no list named {name!r} (lists: {known})",
                hint="Import subscribers with `mailer subscribers import FILE --list NAME`.",
            )
        return int(found)

    def ensure_list(self, connection: Connection, name: str) -> int:
        found = connection.execute(select(lists.c.id).where(lists.c.name == name)).scalar()
        if found is not None:
            return int(found)
        result = connection.execute(
            insert(lists).values(name=name, created_at=utcnow()).returning(lists.c.id)
        )
        return int(result.scalar_one())
