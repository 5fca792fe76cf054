"""Import rules: dependencies between mailer's rooms point one way.

The source is read with `ast`, never imported, so a rule holds for code no test runs.

What counts as an import of module B by module A: every `import` and `from ... import`
statement anywhere in A's file naming B: at the top, inside functions and methods, under
`if TYPE_CHECKING:`, inside `try:`. A lazy or type-only import is still a dependency (A does
not work, or does not type-check, without B), and moving an import into a function is the
usual way a cycle gets hidden rather than removed. `from P import name` counts as importing
`P.name` when that is a module, else `P`; relative imports are resolved. Not counted:
importing a package's `__init__` implicitly on the way to one of its submodules (Python
does, but then every package importing its own submodules would be a "cycle"), and strings
handed to importlib or Alembic (nothing in src/mailer does that for mailer modules).

Rooms are the top-level folders of src/mailer; the shared kernel modules form one room.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOT = REPO_ROOT / "src"

KERNEL_MODULES = frozenset(
    {
        "config",
        "errors",
        "safety",
        "tokens",
        "models",
        "addresses",
        "clock",
        "preflight",
        "assets",
        "logs",  # one log format; the standard library only
    }
)
ROOMS = frozenset(
    {
        "audience",
        "message",
        "delivery",
        "sending",
        "feedback",
        "campaigns",
        "store",
        "migrations",
        "web",
        "cli",
    }
)
KERNEL = "kernel"
# `mailer/__init__.py` and `python -m mailer`: the package itself, above every room.
ENTRY = "entry"
ENTRY_MODULES = frozenset({"__init__", "__main__"})

# (importing rooms, imported rooms, why): the direction of the pipeline.
FORBIDDEN: tuple[tuple[frozenset[str], frozenset[str], str], ...] = (
    (
        frozenset({"sending", "message", "delivery"}),
        frozenset({"store", "cli", "web"}),
        "the pipeline stages work on records and ports, never on SQL or an interface",
    ),
    (
        frozenset({"store"}),
        frozenset({"audience"}),
        "the store keeps records; reading and importing lists sits above it",
    ),
    (
        frozenset({"message"}),
        frozenset({"sending", "campaigns"}),
        "a message is built without knowing how or when it is sent",
    ),
    (
        frozenset({"feedback"}),
        frozenset({"store", "sending", "campaigns", "cli", "web"}),
        "reading and classifying returned mail works on records; campaigns/ applies them",
    ),
)


@dataclass(frozen=True, slots=True, order=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int

    def describe(self, root: Path) -> str:
        where = self.path.relative_to(root) if self.path.is_relative_to(root) else self.path
        return f"{where}:{self.line}: {self.importer} imports {self.imported}"


def module_files(source_root: Path, package: str = "mailer") -> dict[str, tuple[Path, bool]]:
    """Every module of `package` under `source_root`: dotted name -> (file, is a package)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted((source_root / package).rglob("*.py")):
        parts = list(path.relative_to(source_root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def import_graph(source_root: Path, package: str = "mailer") -> list[Import]:
    """Every import between modules of `package`, as the module docstring defines it."""
    modules = module_files(source_root, package)

    def known(name: str) -> str | None:
        # `import mailer.x.Name` cannot happen, but `from mailer.x import Name` names a
        # module only when mailer/x/Name.py exists: otherwise it imports mailer.x.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    imports: set[Import] = set()
    for module, (path, is_package) in modules.items():
        here = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join([*base_parts, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                names = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            for name in names:
                if name != package and not name.startswith(f"{package}."):
                    continue
                target = known(name)
                if target is not None and target != module:
                    imports.add(Import(module, target, path, node.lineno))
    return sorted(imports)


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ENTRY_MODULES:
        return ENTRY
    if parts[1] in KERNEL_MODULES:
        return KERNEL
    return parts[1]


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of nodes that reach each other (cycles), size > 1."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowest[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                lowest[node] = min(lowest[node], lowest[successor])
            elif successor in on_stack:
                lowest[node] = min(lowest[node], index[successor])
        if lowest[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def _listing(imports: list[Import], root: Path, *, limit: int = 5) -> list[str]:
    shown = [f"    {found.describe(root)}" for found in imports[:limit]]
    if len(imports) > limit:
        shown.append(f"    ... and {len(imports) - limit} more")
    return shown


def room_cycles(imports: list[Import], root: Path) -> list[str]:
    """One message per cycle between rooms, naming each import that closes it."""
    between: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for found in imports:
        rooms = room_of(found.importer), room_of(found.imported)
        if rooms[0] != rooms[1]:
            between[rooms].append(found)
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in between:
        graph[source].add(target)
    messages = []
    for group in strongly_connected(graph):
        lines = [f"rooms {' <-> '.join(group)} import each other:"]
        # The direction with the fewest imports is usually the one to cut: list it first.
        pairs = sorted(
            ((pair, listed) for pair, listed in between.items() if set(pair) <= set(group)),
            key=lambda item: (len(item[1]), item[0]),
        )
        for (source, target), listed in pairs:
            count = f"{len(listed)} import" + ("s" if len(listed) > 1 else "")
            lines.append(f"  {source} -> {target} ({count})")
            lines.extend(_listing(listed, root))
        messages.append("\n".join(lines))
    return messages


def forbidden_imports(imports: list[Import], root: Path) -> list[str]:
    messages = []
    for importers, imported, why in FORBIDDEN:
        for found in imports:
            if room_of(found.importer) in importers and room_of(found.imported) in imported:
                messages.append(
                    f"{found.describe(root)} "
                    f"({room_of(found.importer)} must not import {room_of(found.imported)}: {why})"
                )
    return messages


def module_cycles(imports: list[Import], root: Path) -> list[str]:
    graph: dict[str, set[str]] = defaultdict(set)
    for found in imports:
        graph[found.importer].add(found.imported)
    messages = []
    for group in strongly_connected(graph):
        inside = [found for found in imports if {found.importer, found.imported} <= set(group)]
        lines = [f"modules {', '.join(group)} import each other:"]
        lines.extend(_listing(inside, root, limit=len(inside)))
        messages.append("\n".join(lines))
    return messages


@pytest.fixture(scope="module")
def mailer_imports() -> list[Import]:
    return import_graph(SOURCE_ROOT)


# -- the rules on mailer itself ---------------------------------------------------------------


def test_every_module_is_in_a_known_room() -> None:
    """A new top-level module or folder must be placed in the kernel or a room on purpose."""
    unplaced = [
        module
        for module in module_files(SOURCE_ROOT)
        if room_of(module) not in ROOMS | {KERNEL, ENTRY}
    ]
    assert not unplaced, f"not in any room (add to KERNEL_MODULES or ROOMS): {unplaced}"


def test_no_cycle_between_rooms(mailer_imports: list[Import]) -> None:
    cycles = room_cycles(mailer_imports, REPO_ROOT)
    assert not cycles, "\n\n".join(cycles)


def test_no_import_against_the_pipeline(mailer_imports: list[Import]) -> None:
    """sending/message/delivery never import store/cli/web; store never imports audience;
    message never imports sending or campaigns; feedback never imports store, sending,
    campaigns, cli or web."""
    wrong = forbidden_imports(mailer_imports, REPO_ROOT)
    assert not wrong, "\n".join(wrong)


def test_no_cycle_between_modules(mailer_imports: list[Import]) -> None:
    cycles = module_cycles(mailer_imports, REPO_ROOT)
    assert not cycles, "\n\n".join(cycles)


# -- the checker itself, on a package made for the purpose ------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_graph_counts_lazy_type_only_and_relative_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "mailer/__init__.py": "",
            "mailer/models.py": "import json\n",
            "mailer/store/__init__.py": "from mailer.store.lists import Lists\n",
            "mailer/store/lists.py": "from ..models import X\nfrom . import base\n",
            "mailer/store/base.py": "",
            "mailer/sending/__init__.py": "",
            "mailer/sending/engine.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from mailer.store import Store\n"
                "def run():\n"
                "    import mailer.web.app\n"
            ),
            "mailer/web/__init__.py": "",
            "mailer/web/app.py": "from mailer import sending\n",
        },
    )
    edges = {(found.importer, found.imported, found.line) for found in import_graph(tmp_path)}
    assert edges == {
        ("mailer.store", "mailer.store.lists", 1),
        ("mailer.store.lists", "mailer.models", 1),
        ("mailer.store.lists", "mailer.store.base", 2),
        ("mailer.sending.engine", "mailer.store", 3),
        ("mailer.sending.engine", "mailer.web.app", 5),
        ("mailer.web.app", "mailer.sending", 1),
    }


def test_the_checks_name_the_file_and_line_of_each_offending_import(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "mailer/__init__.py": "",
            "mailer/tokens.py": "def load():\n    from mailer.store import Store\n",
            "mailer/store/__init__.py": "from mailer.tokens import load\n",
            "mailer/message/__init__.py": "",
            "mailer/message/compose.py": "\n\nfrom mailer.campaigns import plan\n",
            "mailer/campaigns/__init__.py": "from mailer.message import compose\n",
        },
    )
    imports = import_graph(tmp_path)

    [kernel_and_store] = [m for m in room_cycles(imports, tmp_path) if "kernel" in m]
    assert "rooms kernel <-> store" in kernel_and_store
    assert "mailer/tokens.py:2: mailer.tokens imports mailer.store" in kernel_and_store
    assert forbidden_imports(imports, tmp_path) == [
        "mailer/message/compose.py:3: mailer.message.compose imports mailer.campaigns "
        "(message must not import campaigns: a message is built without knowing how or "
        "when it is sent)"
    ]
    cycles = module_cycles(imports, tmp_path)
    assert len(cycles) == 2
    assert "mailer/store/__init__.py:1: mailer.store imports mailer.tokens" in cycles[1]
