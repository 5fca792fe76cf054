"""Bounces, complaints and mailed unsubscribes: read the mailbox, classify, decide the policy."""
