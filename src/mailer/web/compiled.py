"""Compiled Jinja2 templates kept for the life of the process, across apps.

Each app (`create_app`) builds its own Environments and compiles every template at start
so a broken one fails then, not at a first visit. Compiling the dashboard's 20 templates
took 0.15-0.3 s per app (about 5 ms from this cache), which the test suite, making
hundreds of apps, paid each time. Jinja2 keys a cached template by its name and file
path and checks a hash of its source, so an edited template is compiled again.

The compiled code also depends on how its Environment is set up (autoescape, filters by
name and kind, delimiters): share one cache only between Environments built by the same
code with the same settings.
"""

from __future__ import annotations

from jinja2.bccache import Bucket, BytecodeCache


class CompiledTemplates(BytecodeCache):
    """An in-memory bytecode cache. Thread-safe as Jinja2 uses it: a lookup or store is
    one dict operation, and two threads compiling one template store the same code."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self.compiled = 0
        """How many times a template was compiled (not found here, or edited since)."""

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)  # ignored if the source's hash differs

    def dump_bytecode(self, bucket: Bucket) -> None:
        # Jinja2 stores only what it has just compiled.
        self._code[bucket.key] = bucket.bytecode_to_string()
        self.compiled += 1

    def clear(self) -> None:
        self._code.clear()
