"""The engine: one campaign run over the Ledger port; retry, breaker, rate, journal, recovery."""
