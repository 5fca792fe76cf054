"""Record ids in dashboard paths: `{campaign_id:id}`, never `{campaign_id:int}`.

Starlette's `int` convertor takes any number of digits, and a path naming an id beyond
PostgreSQL's BIGINT (`/admin/campaigns/99999999999999999999`) reached the query and failed
it: a 500 instead of "not found". Ids here are at most 18 digits (every such number fits
a BIGINT), so a longer one matches no route: 404, as for any id that does not exist.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class IdConvertor(Convertor[int]):
    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        if not 0 <= value < 10**18:
            raise ValueError(f"not a record id: {value}")
        return str(value)


register_url_convertor("id", IdConvertor())
