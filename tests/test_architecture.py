"""The package's shape: no import circle among triaged's modules, and each room imports only
the rooms it may (see docs/ARCHITECTURE.md).

The graph is read from the source (every `import` anywhere in a module: inside functions and
under TYPE_CHECKING too), so a circle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "triaged"

# room -> rooms (or top-level modules) of triaged it must never import.
FORBIDDEN = {
    "triaged.mail": ("triaged.intake", "triaged.commands", "triaged.service", "triaged.clocks"),
    "triaged.disclosure": ("triaged.intake", "triaged.commands", "triaged.service"),
}
# room -> the only parts of triaged it may import.
ONLY = {
    "triaged.core": ("triaged.core", "triaged.errors"),
}


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package under `root`, by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that the module `name` (at `path`) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from triaged.x import y` imports the module triaged.x.y when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    names = module_names(root)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def within(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


def trespasses(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a room by a module that must not import it, as "a imports b"."""
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            for room, banned in FORBIDDEN.items():
                if within(name, room) and any(within(target, b) for b in banned):
                    found.append(f"{name} imports {target}")
            for room, allowed in ONLY.items():
                if within(name, room) and not any(within(target, a) for a in allowed):
                    found.append(f"{name} imports {target}")
    return found


def test_no_import_circle_among_triaged_modules() -> None:
    assert circles(import_graph()) == []


def test_each_room_imports_only_what_it_may() -> None:
    assert trespasses(import_graph()) == []


def test_every_subpackage_has_an_init_so_setuptools_finds_it() -> None:
    missing = [
        str(folder.relative_to(PACKAGE.parent))
        for folder in PACKAGE.rglob("*")
        if folder.is_dir()
        and folder.name != "__pycache__"
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").exists()
    ]
    assert missing == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "triaged"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    "files",
    [
        # A circle through a lazy import inside a function.
        {
            "__init__.py": "",
            "a.py": "from triaged.b import x\n",
            "b.py": "x = 1\ndef f():\n    from triaged import a\n",
        },
        # A circle through TYPE_CHECKING and a relative import, across sub-packages.
        {
            "__init__.py": "",
            "mail/__init__.py": "",
            "mail/box.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from ..config import C\n",
            "config.py": "from .mail import box\n",
        },
    ],
)
def test_a_hidden_circle_is_found(tmp_path: Path, files: dict[str, str]) -> None:
    assert len(circles(import_graph(_package(tmp_path, files)))) == 1


def test_a_room_importing_a_forbidden_room_is_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "config.py": "",
            "core/__init__.py": "",
            "core/ids.py": "from triaged import errors\nimport triaged.config\n",
            "mail/__init__.py": "",
            "mail/parse.py": "def f():\n    from triaged.commands.base import X\n",
            "commands/__init__.py": "",
            "commands/base.py": "X = 1\n",
        },
    )
    assert trespasses(import_graph(root)) == [
        "triaged.core.ids imports triaged.config",
        "triaged.mail.parse imports triaged.commands.base",
    ]


# --- one writer per table ------------------------------------------------------------------

# table -> the one module that writes it (migrations, which write the schema, aside).
TABLE_OWNERS = {
    "reports": "triaged.store.reports",
    "participants": "triaged.store.reports",
    "messages": "triaged.store.messages",
    "mailbox_state": "triaged.store.messages",
    "adoptions": "triaged.store.messages",
    "events": "triaged.store.events",
    "outbox": "triaged.store.outbox",
    "deadlines": "triaged.store.deadlines",
    "clock_state": "triaged.store.deadlines",
    "notices": "triaged.store.notices",
    "outages": "triaged.store.outages",
    "blocked": "triaged.store.blocklist",
    "report_terms": "triaged.store.terms",
    "canaries": "triaged.store.canaries",
}
SCHEMA_MODULE = "triaged.store.migrations"
_WRITES = re.compile(
    r"\bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+(\w+)|\bREPLACE\s+INTO\s+(\w+)"
    r"|\bUPDATE\s+(\w+)\s+SET\b|\bDELETE\s+FROM\s+(\w+)"
)


def _sql_texts(tree: ast.AST) -> list[str]:
    """Every string literal of a module, an f-string with each of its fields as "{}"."""
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            texts.append(
                "".join(
                    str(part.value) if isinstance(part, ast.Constant) else "{}"
                    for part in node.values
                )
            )
    return texts


def tables_written(path: Path) -> set[str]:
    """The tables a module writes: by SQL (INSERT, REPLACE, UPDATE, DELETE) or by
    `store.insert("table", ...)`."""
    tree = ast.parse(path.read_text(), str(path))
    found = {
        table
        for text in _sql_texts(tree)
        for match in _WRITES.finditer(text)
        for table in match.groups()
        if table
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "insert"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def wrong_writers(root: Path = PACKAGE) -> list[str]:
    """Each write of a table by a module other than its owner, as "module writes table"."""
    found = []
    for name, path in module_names(root).items():
        if name == SCHEMA_MODULE:
            continue
        for table in sorted(tables_written(path)):
            if TABLE_OWNERS.get(table) != name:
                found.append(f"{name} writes {table}")
    return found


def test_each_table_is_written_by_its_owner_only() -> None:
    assert wrong_writers() == []


def test_a_write_outside_the_owner_is_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "store/__init__.py": "",
            "store/reports.py": 'def f(s):\n    s.execute("UPDATE reports SET state = ?")\n',
            "intake/__init__.py": "",
            "intake/runner.py": "def f(s, c):\n"
            '    s.insert("participants", {})\n'
            '    s.execute(f"UPDATE reports SET {c} = ?")\n'
            '    s.execute("INSERT OR REPLACE INTO mailbox_state VALUES (1)")\n'
            '    s.execute("DELETE FROM newtable")\n',
        },
    )
    assert wrong_writers(root) == [
        "triaged.intake.runner writes mailbox_state",
        "triaged.intake.runner writes newtable",
        "triaged.intake.runner writes participants",
        "triaged.intake.runner writes reports",
    ]
