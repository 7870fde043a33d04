"""The monitor form's fields for each kind, read from the same msgspec types the API
validates with (monitors.MonitorCommon and the kind's spec), so a field added to a kind
appears in the console with no template change. The server's 422 details name the same
fields, and the page shows each message beside its field."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import inspect

from probefleet.controller.monitors import config as monitors

# Common fields the form shows (the rest keep their defaults or stored values).
COMMON = (
    "name",
    "check_interval",
    "timeout",
    "locations",
    "tags",
    "retry_count",
    "recovery_count",
    "project",
)
LONG_TEXT = frozenset({"ca_pem", "body", "graphql_query", "send"})
HIDDEN = frozenset({"secret_headers", "secret_params"})


@dataclass(frozen=True)
class Field:
    name: str  # the API's name of the field
    label: str
    input: str  # text, textarea, number, checkbox, select, list, json, secret, pairs, sections
    required: bool = False
    choices: tuple[str, ...] = ()
    step: str = "1"
    default: Any = None
    mask: str = ""  # a secret's mask (notifiers.base.Mask): "url" gets a URL input


def _input(t: inspect.Type) -> tuple[str, tuple[str, ...], str]:
    if isinstance(t, inspect.UnionType):
        rest = [x for x in t.types if not isinstance(x, inspect.NoneType)]
        if len(rest) == 1:
            return _input(rest[0])
        return "json", (), "1"
    if isinstance(t, inspect.Metadata):
        return _input(t.type)
    if isinstance(t, inspect.BoolType):
        return "checkbox", (), "1"
    if isinstance(t, inspect.IntType):
        return "number", (), "1"
    if isinstance(t, inspect.FloatType):
        return "number", (), "any"
    if isinstance(t, inspect.StrType | inspect.DateTimeType):
        return "text", (), "1"
    if isinstance(t, inspect.LiteralType):
        return "select", tuple(str(v) for v in t.values), "1"
    if isinstance(t, inspect.ListType):
        item = t.item_type.type if isinstance(t.item_type, inspect.Metadata) else t.item_type
        if isinstance(item, inspect.StrType | inspect.IntType | inspect.UnionType | inspect.LiteralType):
            return "list", (), "1"
    return "json", (), "1"


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _fields_of(
    struct: type[msgspec.Struct], names: dict[str, str], only: tuple[str, ...] | None
) -> list[Field]:
    info = inspect.type_info(struct)
    assert isinstance(info, inspect.StructType)
    out = []
    for f in info.fields:
        name = names.get(f.name, f.encode_name)
        if (only is not None and f.name not in only) or name in HIDDEN:
            continue
        kind, choices, step = _input(f.type)
        if kind == "text" and name in LONG_TEXT:
            kind = "textarea"
        default = None if f.default is inspect.NODEFAULT else f.default
        out.append(Field(name, _label(name), kind, f.required, choices, step, default))
    if only is not None:
        out.sort(key=lambda x: only.index(x.name))
    return out


def struct_fields(
    struct: type[msgspec.Struct],
    only: tuple[str, ...] | None = None,
    *,
    skip: frozenset[str] = frozenset(),
    long_text: frozenset[str] = frozenset(),
    labels: dict[str, str] | None = None,
) -> list[Field]:
    """The form of any API body type (a channel, a rule, a window, a status page): its
    fields in `only`'s order (or the type's), without `skip`; `long_text` fields get a
    textarea, `labels` overrides the generated labels."""
    out = []
    for f in _fields_of(struct, {}, only):
        if f.name in skip:
            continue
        kind = "textarea" if f.name in long_text and f.input == "text" else f.input
        label = (labels or {}).get(f.name, f.label)
        out.append(Field(f.name, label, kind, f.required, f.choices, f.step, f.default))
    return out


def fields_for(kind: str) -> list[Field]:
    """The name, the kind's own fields (its target first), then the other common ones."""
    spec = monitors.SPEC_TYPES[kind]
    common = _fields_of(monitors.MonitorCommon, {}, COMMON)
    return common[:1] + _fields_of(spec, monitors.SPEC_API_NAMES.get(kind, {}), None) + common[1:]


def form_value(field: Field, value: Any) -> str:
    """What the input shows for a stored value."""
    if value is None:
        return ""
    if field.input == "list" and isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if field.input == "json":
        return msgspec.json.encode(value).decode()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)


KINDS: tuple[str, ...] = tuple(monitors.SPEC_TYPES)
