"""Subscribers read back from the store: every field, and the list-level status on a list."""

from __future__ import annotations

from pathlib import Path

from mailer.audience.importer import import_file
from mailer.models import Subscriber, SubscriberStatus, UnsubscribeSource
from mailer.store import Store


def test_subscribers_read_back_whole_and_show_a_list_level_unsubscribe_on_that_list(
    store: Store, tmp_path: Path
) -> None:
    """Ana left list `a` only: on `a` she reads as unsubscribed, on `b` and across all
    lists as subscribed; name, attributes and id come back as imported."""
    csv = tmp_path / "people.csv"
    csv.write_text("email,name,city\nana@example.org,Ana Lima,Porto\n", encoding="utf-8")
    for list_name in ("a", "b"):
        import_file(store, csv, list_name=list_name, rejects_path=tmp_path / "rejects.csv")
    ana = store.get_subscriber("ana@example.org")
    assert ana == Subscriber(
        email="ana@example.org",
        name="Ana Lima",
        attributes={"city": "Porto"},
        status=SubscriberStatus.SUBSCRIBED,
        id=ana.id,
    )
    assert isinstance(ana.id, int)
    store.unsubscribe(ana.id, store.list_id("a"), source=UnsubscribeSource.ONE_CLICK)

    def status_on(list_name: str | None) -> list[SubscriberStatus]:
        return [s.status for s in store.iter_subscribers(list_name)]

    assert status_on("a") == [SubscriberStatus.UNSUBSCRIBED]
    assert status_on("b") == [SubscriberStatus.SUBSCRIBED]
    assert status_on(None) == [SubscriberStatus.SUBSCRIBED]
    assert list(store.iter_subscribers("a")) == [
        Subscriber(
            "ana@example.org", "Ana Lima", {"city": "Porto"}, SubscriberStatus.UNSUBSCRIBED, ana.id
        )
    ]
    assert list(store.iter_subscribers("a", only_subscribed=True)) == []
    assert store.get_subscriber("ana@example.org") == ana
