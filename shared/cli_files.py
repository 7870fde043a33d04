"""Config-as-code files: read YAML files and folders into one apply set, offline.

A file holds sections of resources (regions, monitors, heartbeats, channels, rules,
maintenance, status pages with sections naming monitors by key)
and optional `defaults:` for its monitors. Each resource has a stable key, its `ref` or
else its `name`; references between resources use keys (`parent: api`, `notifications:
[ops-slack]`). Strings may hold `${env:NAME}` and `${file:/path}` secret references,
replaced only in the request `probefleet apply` sends, never written anywhere.

Every problem is reported, not the first only, as `file:line:column: message` (1-based),
positions taken from yaml's nodes. Fields are checked against the JSON Schema the
controller generates from its own types (config-schema.json beside this module,
docs/config-schema.json; a test keeps both current), by the small validator below, which
understands what msgspec writes: $ref, type, enum, anyOf (with a discriminator), object
properties, arrays and the numeric and length bounds.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("regions", "monitors", "heartbeats", "channels", "rules", "maintenance", "status_pages")
# Which namespace of keys each section's resources live in (heartbeats are monitors).
KIND_OF = {
    "monitors": "monitor",
    "heartbeats": "monitor",
    "channels": "channel",
    "rules": "rule",
    "maintenance": "window",
    "status_pages": "status_page",
    "regions": "region",
}
# Reference fields: (section, field) -> the kind of resource the keys name.
REFERENCES = {
    ("monitors", "parent"): "monitor",
    ("monitors", "notifications"): "channel",
    ("monitors", "escalation_policy"): "rule",
    ("heartbeats", "parent"): "monitor",
    ("heartbeats", "notifications"): "channel",
    ("heartbeats", "escalation_policy"): "rule",
    ("rules", "channels"): "channel",
    ("rules", "escalation_channels"): "channel",
    ("rules", "monitors"): "monitor",
    ("maintenance", "monitors"): "monitor",
}
SECRET = re.compile(r"\$\{(env|file):([^}]*)\}")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class FileError(Exception):
    """The files cannot be applied: every problem found, each with its place."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = sorted(problems)


@dataclass
class Resource:
    section: str
    key: str
    fields: dict[str, Any]
    file: str
    where: dict[Path_, tuple[int, int]]  # field path inside the resource -> (line, column)

    @property
    def kind(self) -> str:
        return KIND_OF[self.section]

    def place(self, path: Path_ = ()) -> tuple[int, int]:
        """The line and column of a field of this resource, or of the nearest enclosing one."""
        while path not in self.where and path:
            path = path[:-1]
        return self.where.get(path, (1, 1))


@dataclass
class ApplySet:
    resources: list[Resource] = field(default_factory=list)
    _index: dict[tuple[str, str], Resource] = field(default_factory=dict, repr=False)

    def add(self, r: Resource) -> None:
        self.resources.append(r)
        self._index[(r.kind, r.key)] = r

    def find(self, kind: str, key: str) -> Resource | None:
        return self._index.get((kind, key))


# ---- YAML with positions ------------------------------------------------------------------


# libyaml's parser when the wheel has it: 5,000 monitors parse in a fraction of a second
# instead of about 4 s.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    """YAML 1.1 without the surprises for this format: `12:30` stays a string (not
    sexagesimal 750) and times stay strings (the API reads them)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, r) for tag, r in resolvers if not tag.endswith(("int", "float", "timestamp"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _positions(
    node: yaml.Node, path: Path_, out: dict[Path_, tuple[int, int]], dupes: list[tuple[Path_, yaml.Node]]
) -> None:
    out[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            name = str(k.value)
            if name in seen:
                dupes.append(((*path, name), k))
            seen.add(name)
            _positions(v, (*path, name), out, dupes)
            out[(*path, name)] = (k.start_mark.line + 1, k.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _positions(v, (*path, i), out, dupes)


def _read(path: Path, problems: list[Problem]) -> tuple[Any, dict[Path_, tuple[int, int]]] | None:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(name, 1, 1, f"cannot read: {e}"))
        return None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(Problem(name, line, col, f"malformed YAML: {e.problem or e.context}"))
        return None
    except yaml.YAMLError as e:
        problems.append(Problem(name, 1, 1, f"malformed YAML: {e}"))
        return None
    finally:
        loader.dispose()
    where: dict[Path_, tuple[int, int]] = {}
    dupes: list[tuple[Path_, yaml.Node]] = []
    if node is not None:
        _positions(node, (), where, dupes)
    for p, k in dupes:
        problems.append(
            Problem(name, k.start_mark.line + 1, k.start_mark.column + 1, f"{_dotted(p)}: given twice")
        )
    return data, where


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# ---- the schema ---------------------------------------------------------------------------


@functools.cache
def schema() -> dict[str, Any]:
    text = (resources.files("probefleet.shared") / "config-schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "object": (dict,),
    "array": (list,),
}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


def check(value: Any, node: dict[str, Any], path: Path_ = ()) -> list[tuple[Path_, str]]:
    """(field path, message) for everything in `value` that the schema `node` refuses."""
    defs = schema()["$defs"]
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in node:
        disc = node.get("discriminator")
        if disc and isinstance(value, dict):
            tag = disc["propertyName"]
            if tag not in value:
                return [((*path, tag), f"required: one of {', '.join(disc['mapping'])}")]
            target = disc["mapping"].get(value[tag]) if isinstance(value[tag], str) else None
            if target is None:
                return [
                    ((*path, tag), f"unknown {tag} {value[tag]!r}; use one of {', '.join(disc['mapping'])}")
                ]
            return check(value, {"$ref": target}, path)
        options = [check(value, option, path) for option in node["anyOf"]]
        if any(not o for o in options):
            return []
        return min(options, key=len)  # the branch that came closest says what is wrong
    if "enum" in node:
        return (
            [] if value in node["enum"] else [(path, f"must be one of {', '.join(map(str, node['enum']))}")]
        )
    kinds = node.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(value, k) for k in kinds):
            if isinstance(value, str) and SECRET.search(value):
                return []  # a secret reference: its value is checked by the server when applied
            return [(path, f"expected {' or '.join(kinds)}, got {_type_name(value)}")]
    out: list[tuple[Path_, str]] = []
    if isinstance(value, dict):
        props = node.get("properties", {})
        for name in node.get("required", []):
            if name not in value:
                out.append(((*path, name), "required field"))
        for name, item in value.items():
            if name in props:
                out.extend(check(item, props[name], (*path, name)))
            elif node.get("additionalProperties") is False:
                out.append(((*path, name), "unknown field"))
            elif isinstance(node.get("additionalProperties"), dict):
                out.extend(check(item, node["additionalProperties"], (*path, name)))
    elif isinstance(value, list):
        if "maxItems" in node and len(value) > node["maxItems"]:
            out.append((path, f"must have at most {node['maxItems']} items"))
        if "minItems" in node and len(value) < node["minItems"]:
            out.append((path, f"must have at least {node['minItems']} items"))
        if isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                out.extend(check(item, node["items"], (*path, i)))
    elif isinstance(value, str):
        if "maxLength" in node and len(value) > node["maxLength"]:
            out.append((path, f"must be at most {node['maxLength']} characters"))
        if "minLength" in node and len(value) < node["minLength"]:
            out.append((path, f"must be at least {node['minLength']} characters"))
        if "pattern" in node and not SECRET.search(value) and not re.search(node["pattern"], value):
            out.append((path, f"must match {node['pattern']}"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        for key, ok, text in (
            ("minimum", lambda v, b: v >= b, "at least"),
            ("maximum", lambda v, b: v <= b, "at most"),
            ("exclusiveMinimum", lambda v, b: v > b, "greater than"),
            ("exclusiveMaximum", lambda v, b: v < b, "less than"),
        ):
            if key in node and not ok(value, node[key]):
                out.append((path, f"must be {text} {node[key]}"))
    return out


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


# ---- files and folders into an apply set --------------------------------------------------


def files_of(paths: Iterable[str | Path]) -> list[Path]:
    """The YAML files of the paths given: files as given, folders walked (*.yaml, *.yml)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()))
        else:
            out.append(p)
    return out


def load(paths: Iterable[str | Path]) -> ApplySet:
    """Every resource of the files, defaults applied, checked against the schema, keys
    unique, references resolved within the set; FileError with every problem otherwise.
    Secret references stay as written (see `resolve_secrets`)."""
    problems: list[Problem] = []
    out = ApplySet()
    files = files_of(paths)
    if not files:
        raise FileError([Problem(", ".join(map(str, paths)) or ".", 1, 1, "no YAML files found")])
    root = schema()
    for path in files:
        read = _read(path, problems)
        if read is None:
            continue
        data, where = read
        name = str(path)
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(Problem(name, *where.get((), (1, 1)), "the file must be a mapping of sections"))
            continue
        defaults: dict[str, Any] = data["defaults"] if isinstance(data.get("defaults"), dict) else {}
        for section in SECTIONS:
            for i, entry in enumerate(data.get(section) or []):
                if section == "monitors" and isinstance(entry, dict):
                    merged = {**{k: v for k, v in defaults.items() if v is not None}, **entry}
                    for k in merged.keys() - entry.keys():  # a defaulted field is placed at its default
                        where[(section, i, k)] = where.get(("defaults", k), (1, 1))
                    data[section][i] = merged
        for p, message in check(data, root, ()):
            line, col = where.get(p, None) or _nearest(where, p)
            problems.append(Problem(name, line, col, f"{_dotted(p)}: {message}"))
        by_resource: dict[Path_, dict[Path_, tuple[int, int]]] = {}
        for p, pos in where.items():
            if len(p) >= 2:
                by_resource.setdefault(p[:2], {})[p[2:]] = pos
        for section in SECTIONS:
            entries = data.get(section)
            if not isinstance(entries, list):
                continue
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    continue
                key = entry.get("ref") or entry.get("name")
                if not isinstance(key, str) or not key:
                    continue
                mine = by_resource.get((section, i), {})
                fields = {k: v for k, v in entry.items() if k != "ref"}
                if section == "heartbeats":
                    fields["type"] = "heartbeat"
                resource = Resource(section, key, fields, name, mine)
                if (other := out.find(resource.kind, key)) is not None:
                    line, col = resource.place(("ref",) if "ref" in entry else ("name",))
                    where_other = f"{other.file}:{other.place()[0]}"
                    problems.append(
                        Problem(
                            name, line, col, f"duplicate {resource.kind} key {key!r} (also at {where_other})"
                        )
                    )
                    continue
                out.add(resource)
    problems.extend(_dangling(out))
    if problems:
        raise FileError(problems)
    return out


def _nearest(where: dict[Path_, tuple[int, int]], path: Path_) -> tuple[int, int]:
    while path and path not in where:
        path = path[:-1]
    return where.get(path, (1, 1))


def _dangling(s: ApplySet) -> list[Problem]:
    problems = []
    for r in s.resources:
        if r.section == "status_pages":
            problems.extend(_dangling_components(s, r))
        for (section, name), kind in REFERENCES.items():
            if r.section != section or r.fields.get(name) is None:
                continue
            value = r.fields[name]
            wanted = [(i, v) for i, v in enumerate(value)] if isinstance(value, list) else [(None, value)]
            for i, key in wanted:
                if isinstance(key, str) and s.find(kind, key) is None:
                    path: Path_ = (name,) if i is None else (name, i)
                    line, col = r.place(path)
                    problems.append(
                        Problem(
                            r.file,
                            line,
                            col,
                            f"{r.section}[{r.key}].{_dotted(path)}: no {kind} {key!r} in these files",
                        )
                    )
    return problems


def _dangling_components(s: ApplySet, r: Resource) -> list[Problem]:
    """A status page's sections name monitors by key: `- api` or `- monitor: api`."""
    problems = []
    sections = r.fields.get("sections")
    for i, section in enumerate(sections if isinstance(sections, list) else []):
        items = section.get("monitors") if isinstance(section, dict) else None
        for j, item in enumerate(items if isinstance(items, list) else []):
            key = item.get("monitor") if isinstance(item, dict) else item
            path: Path_ = ("sections", i, "monitors", j, *(("monitor",) if isinstance(item, dict) else ()))
            if isinstance(key, str) and s.find("monitor", key) is None:
                line, col = r.place(path)
                message = f"{r.section}[{r.key}].{_dotted(path)}: no monitor {key!r} in these files"
                problems.append(Problem(r.file, line, col, message))
    return problems


# ---- secrets ------------------------------------------------------------------------------


def resolve_secrets(s: ApplySet, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The resources with every `${env:X}` and `${file:/p}` replaced, for the request only;
    FileError naming file and line for an unset variable or an unreadable file."""
    environ = os.environ if env is None else env
    problems: list[Problem] = []

    def sub(value: Any, r: Resource, path: Path_) -> Any:
        if isinstance(value, dict):
            return {k: sub(v, r, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, r, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def one(m: re.Match[str]) -> str:
            source, name = m.group(1), m.group(2)
            if source == "env":
                if name not in environ:
                    problems.append(
                        Problem(
                            r.file, *r.place(path), f"{_dotted(path)}: environment variable {name} is not set"
                        )
                    )
                    return ""
                return environ[name]
            try:
                return Path(name).read_text(encoding="utf-8").rstrip("\n")
            except OSError as e:
                problems.append(
                    Problem(
                        r.file,
                        *r.place(path),
                        f"{_dotted(path)}: cannot read secret file {name}: {e.strerror}",
                    )
                )
                return ""

        return SECRET.sub(one, value)

    out = [{"section": r.section, "key": r.key, "fields": sub(r.fields, r, ())} for r in s.resources]
    if problems:
        raise FileError(problems)
    return out


def request_body(
    s: ApplySet, *, owner: str, prune: bool, dry_run: bool, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The body of POST /api/v1/apply for the set (secrets resolved)."""
    body: dict[str, Any] = {"owner": owner, "prune": prune, "dry_run": dry_run}
    api_section = {
        "monitors": "monitors",
        "heartbeats": "monitors",
        "channels": "channels",
        "rules": "rules",
        "maintenance": "maintenance",
        "status_pages": "status_pages",
        "regions": "regions",
    }
    for item in resolve_secrets(s, env):
        body.setdefault(api_section[item["section"]], []).append({"key": item["key"], **item["fields"]})
    return body


def place_of_error(s: ApplySet, field_path: str) -> tuple[str, int, int] | None:
    """Where a server error's field (`monitors[api].url`) is in the files."""
    m = re.match(r"^(\w+)\[([^\]]*)\](?:\.(.*))?$", field_path)
    if not m:
        return None
    section, key, rest = m.group(1), m.group(2), m.group(3) or ""
    kind = {
        "monitors": "monitor",
        "channels": "channel",
        "rules": "rule",
        "maintenance": "window",
        "status_pages": "status_page",
        "regions": "region",
    }.get(section)
    r = s.find(kind, key) if kind else None
    if r is None:
        return None
    path: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", rest):
        path.append(int(part[1:-1]) if part.startswith("[") else part)
    line, col = r.place(tuple(path))
    return r.file, line, col
