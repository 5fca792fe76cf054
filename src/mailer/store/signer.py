"""The signer a command or a server uses: the store's key ring (see mailer.store.keyring)."""

from __future__ import annotations

from mailer.config import Settings
from mailer.store.keyring import KeyStore, StoreKeySigner, load_keyring
from mailer.tokens import TokenSigner


def load_signer(settings: Settings, *, store: KeyStore | None = None) -> TokenSigner:
    """The signer for these settings: signs with MAILER_SECRET_KEY, or without it with the
    store's own key (made on first use); verifies with every key that ever signed links on
    this store, plus MAILER_SECRET_KEY_FALLBACKS, less MAILER_RETIRED_KEY_IDS.

    See this module's docstring. Keys live in the store rather than in a file under var/, so a
    send and a server on the same store always agree, from any folder or machine. Pass
    the `store` already open (a server must: it then also accepts keys recorded after it
    started); without one, the store named by the settings is opened here, briefly.
    """
    if store is not None:
        # The store stays open with the signer: a server learns keys recorded later.
        ring = load_keyring(settings, store)
        return StoreKeySigner(ring, store=store, retired=settings.retired_key_ids)
    # Callers that hold only settings must still get the store's keys, never a guess.
    from mailer.store import Store

    with Store.open(settings.database_url) as opened:
        ring = load_keyring(settings, opened)
    signing, *others = ring.secrets
    return TokenSigner(signing, fallbacks=others)
