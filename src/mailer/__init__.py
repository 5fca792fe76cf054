"""mailer: a self-hosted mailing-list and event-invitation sender.

The pipeline reads top to bottom: subscribers -> render -> compose -> send -> record.
"""

__version__ = "0.1.0"
