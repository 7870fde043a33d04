"""The import graph of the installed package: no cycle, and dependencies that point one way
(api -> domain -> storage; shared imports neither role; the roles import not each other);
and SQL only in controller/storage/.

Every import counts, those inside functions too: a cycle held together by a function-level
import is still a cycle. Only imports under `if TYPE_CHECKING:` are left out, since they
never run.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROLES = ("controller", "probe", "shared", "client")
# The API client is installed as probefleet.client from shared/client/ (pyproject's
# package-dir): it counts as shared code, and shared/ is read without it.
SHARED = ("probefleet.shared", "probefleet.client")
# A module of the controller outside these may not import the API (api -> domain only).
ABOVE_THE_API = ("api", "app", "cli", "console", "dev", "keys")


def _sources() -> dict[str, Path]:
    """Module name -> file, for every module of the installed probefleet package."""
    modules = {}
    for role in ROLES:
        spec = importlib.util.find_spec(f"probefleet.{role}")
        assert spec is not None and spec.submodule_search_locations
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if role == "shared" and parts[0] == "client":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(("probefleet", role, *parts))] = path
    return modules


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST) -> Iterator[tuple[str, ...]]:
    """For each name an import statement brings in, the modules it may be, most specific
    first: `from a import b` is module a.b if there is one, else a name in a."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            yield from (n for child in node.orelse for n in _imported(child))
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield from ((f"{node.module}.{alias.name}", node.module) for alias in node.names)
        yield from _imported(node)


def graph() -> dict[str, set[str]]:
    modules = _sources()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {next((m for m in c if m in modules), None) for c in _imported(ast.parse(path.read_text()))}
        edges[name] = {t for t in targets if t is not None and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    found = graph()
    assert len(found) > 80 and "probefleet.controller.engine.results" in found  # the walk saw the tree
    return found


def test_there_is_no_import_cycle(edges: dict[str, set[str]]) -> None:
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _violations(edges: dict[str, set[str]], source: str, allowed: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in edges.items()
        if a == source or a.startswith(source + ".")
        for b in targets
        if not b.startswith(allowed)
    )


def test_shared_imports_neither_role(edges: dict[str, set[str]]) -> None:
    assert _violations(edges, "probefleet.shared", SHARED) == []
    assert _violations(edges, "probefleet.client", SHARED) == []
    assert any(m.startswith("probefleet.client.") for m in edges)


def test_the_roles_import_only_themselves_and_shared(edges: dict[str, set[str]]) -> None:
    assert _violations(edges, "probefleet.probe", ("probefleet.probe", *SHARED)) == []
    assert _violations(edges, "probefleet.controller", ("probefleet.controller", *SHARED)) == []


def test_storage_imports_only_storage(edges: dict[str, set[str]]) -> None:
    allowed = ("probefleet.controller.storage", *SHARED)
    assert _violations(edges, "probefleet.controller.storage", allowed) == []


def test_the_domain_does_not_import_the_api(edges: dict[str, set[str]]) -> None:
    above = tuple(f"probefleet.controller.{name}" for name in ABOVE_THE_API)
    wrong = sorted(
        f"{a} -> {b}"
        for a, targets in edges.items()
        if a.startswith("probefleet.controller.") and not a.startswith(above)
        for b in targets
        if b.startswith("probefleet.controller.api")
    )
    assert wrong == []


def test_nothing_imports_the_old_top_level_names() -> None:
    old = []
    for name, path in _sources().items():
        for candidates in _imported(ast.parse(path.read_text())):
            if candidates[-1].split(".")[0] in ROLES:
                old.append(f"{name} imports {candidates[-1]}")
    assert old == []


# ---- SQL lives in storage --------------------------------------------------------------

STORAGE = "probefleet.controller.storage"
# Modules still holding SQL while a move of their queries into storage/ is under way; a
# module leaves this list once its queries have moved (none is left).
SQL_BEING_MOVED: tuple[str, ...] = ()
# (module, call) that looks like a query and is not one.
NOT_QUERIES = {
    # nats-py's JetStream pull subscription, not a database connection.
    ("probefleet.controller.engine.results", "psub.fetch()"),
}
# (module, function) that administers the server rather than querying the application's
# tables: the embedded launcher creates the database the schema then goes into, for
# tests/conftest.py and bench/, which import no controller to do it.
SERVER_ADMINISTRATION = {("probefleet.shared.devstack", "create_database")}
# Modules that query the databases a user monitors, never the application's: the probe's
# postgres and mysql checks run the monitor's read-only query, whose default (SELECT 1)
# the wire spec carries.
MONITORED_DATABASES = (
    "probefleet.probe.checkers.postgres",
    "probefleet.probe.checkers.mysql",
)
NOT_QUERIES |= {("probefleet.shared.wire", "SELECT")}

SQL = re.compile(
    r"\b(?:SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|WITH \w+ AS|pg_(?:try_)?advisory_\w+|pg_notify)\b"
    # LISTEN and NOTIFY only where a statement starts: "an events NOTIFY" in prose is none.
    r"|^\s*(?:LISTEN|NOTIFY) \w+",
    re.MULTILINE,
)
QUERY_METHODS = frozenset(
    {"execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_records_to_table"}
)


def _docstrings(tree: ast.AST) -> set[ast.AST]:
    return {
        node.body[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def sql_in(source: str) -> list[tuple[int, str, str]]:
    """(line, enclosing function, what) for each string literal that looks like an SQL
    statement (`what`: the words that do) and each call of a query method on anything
    (`what`: `receiver.method()`); `function` is "" at module level, "Class.method" in a
    class. Docstrings are prose, never run: "claims rows (UPDATE ... SET ...)" is no query."""
    found: list[tuple[int, str, str]] = []
    tree = ast.parse(source)
    prose = _docstrings(tree)

    def walk(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{scope}.{child.name}" if scope else child.name
            elif isinstance(child, ast.Constant) and isinstance(child.value, str) and child not in prose:
                if match := SQL.search(child.value):
                    found.append((child.lineno, scope, match.group().strip()))
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr in QUERY_METHODS
            ):
                found.append((child.lineno, scope, f"{ast.unparse(child.func)}()"))
            walk(child, inner)

    walk(tree, "")
    return sorted(found)


def _in(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def sql_outside_storage(sources: dict[str, str]) -> list[str]:
    """`module:line what` for each SQL finding outside storage and the lists above."""
    return [
        f"{name}:{line} {what}"
        for name, source in sorted(sources.items())
        if not _in(name, (STORAGE, *SQL_BEING_MOVED, *MONITORED_DATABASES))
        for line, function, what in sql_in(source)
        if (name, what) not in NOT_QUERIES and (name, function) not in SERVER_ADMINISTRATION
    ]


def test_sql_lives_in_storage() -> None:
    assert sql_outside_storage({name: path.read_text() for name, path in _sources().items()}) == []


def test_only_storage_and_the_listed_modules_hold_sql() -> None:
    query = 'async def create_database(conn):\n    return await conn.fetchval("SELECT 1")\n'
    sources = {
        "probefleet.controller.storage.stats": query,
        "probefleet.controller.status_pages.model": query,
        "probefleet.shared.devstack": query + 'async def reset(conn):\n    await conn.execute("x")\n',
        "probefleet.controller.engine.results": "async def consume(psub, pool):\n"
        "    await psub.fetch(500)\n    await pool.fetch(sql)\n",
        "probefleet.controller.storage_copy": query,
    }
    assert sql_outside_storage(sources) == [
        "probefleet.controller.engine.results:3 pool.fetch()",
        "probefleet.controller.status_pages.model:2 SELECT",
        "probefleet.controller.status_pages.model:2 conn.fetchval()",
        "probefleet.controller.storage_copy:2 SELECT",
        "probefleet.controller.storage_copy:2 conn.fetchval()",
        "probefleet.shared.devstack:4 conn.execute()",
    ]


def test_the_sql_finder_finds_queries_and_statements() -> None:
    source = """
\"\"\"Claims deliveries (UPDATE deliveries SET ... WHERE id IN (SELECT ...)).\"\"\"
async def ingest(pool, nc, query, cols):
    await pool.fetchrow("SELECT 1")
    await nc.publish("monitor.SELECTED", b"")
    await request.app[POOL].execute(query)
    return f"UPDATE monitors SET {cols} WHERE id = $1"


class Leader:
    async def step(self, conn):
        \"\"\"One leader: SELECT pg_try_advisory_lock, as the docstring says.\"\"\"
        return await conn.fetchval("SELECT pg_try_advisory_lock($1)", 1)


CHANNEL = "LISTEN events"
"""
    assert sql_in(source) == [
        (4, "ingest", "SELECT"),
        (4, "ingest", "pool.fetchrow()"),
        (6, "ingest", "request.app[POOL].execute()"),
        (7, "ingest", "UPDATE monitors SET"),
        (13, "Leader.step", "SELECT"),
        (13, "Leader.step", "conn.fetchval()"),
        (16, "", "LISTEN events"),
    ]
    assert sql_in('HELP = "Steps started by an events NOTIFY wakeup."\nselect = "select_region"\n') == []


def test_the_controller_page_lists_every_module() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "architecture" / "controller.md").read_text()
    root = Path(next(iter(importlib.util.find_spec("probefleet.controller").submodule_search_locations)))
    modules = [p for p in sorted(root.rglob("*.py")) if p.name != "__init__.py" or p.read_text().strip()]
    assert len(modules) > 60
    missing = [
        f"controller/{p.relative_to(root)}"
        for p in modules
        if f"`controller/{p.relative_to(root)}`" not in page
    ]
    assert missing == []
