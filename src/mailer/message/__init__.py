"""One message out: event, templates, render, dates, the .ics, MIME (no SQL, no Settings)."""
