"""The organiser's use cases: start, schedule, pause, resume, cancel, trial sends; the scheduler."""
