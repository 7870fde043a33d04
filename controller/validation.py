"""Domain validation errors: plain exceptions that know nothing of HTTP. The API renders a
ValidationError as a 422 with one message per field (controller/api/errors.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)

# Times the API accepts: wide enough for any real request, narrow enough that adding a zone
# offset, a day or a range of years can never overflow datetime's years 1 to 9999 (nor
# asyncpg's encoding of a year-1 time with a zone).
MIN_TIME = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
MAX_TIME = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


class ValidationError(ValueError):
    """Input that breaks the model's rules: one message per field path (dots, and [i] for
    list items)."""

    def __init__(self, details: dict[str, object], message: str = "Validation failed") -> None:
        super().__init__(message)
        self.details = details
        self.message = message


def from_msgspec(err: msgspec.ValidationError, prefix: str = "") -> ValidationError:
    """msgspec says 'Expected `int`, got `str` - at `$.timeout`': map it to a field path."""
    text = str(err)
    path = ""
    if " - at `$" in text:
        text, _, path = text.rpartition(" - at `$")
        path = path.rstrip("`").lstrip(".")
    for start, message in (
        ("Object missing required field `", "required field"),
        ("Object contains unknown field `", "unknown field"),
    ):
        if text.startswith(start):
            name = text.split("`")[1]
            path = f"{path}.{name}" if path else name
            text = message
    field = ".".join(p for p in (prefix, path) if p) or "body"
    return ValidationError({field: text})


def convert(data: dict[str, Any], struct: type[S]) -> S:
    """`data` as `struct`: unknown fields and wrong values raise ValidationError naming each."""
    if unknown := sorted(set(data) - set(struct.__struct_fields__)):
        raise ValidationError({k: "unknown field" for k in unknown})
    try:
        out = msgspec.convert(data, struct)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from None
    for name in struct.__struct_fields__:
        if isinstance(value := getattr(out, name), dt.datetime):
            check_time(value, name)
    return out


def check_time(t: dt.datetime, field: str) -> None:
    """A ValidationError naming `field` unless MIN_TIME <= t < MAX_TIME (naive means UTC)."""
    try:
        inside = MIN_TIME <= (t if t.tzinfo else t.replace(tzinfo=dt.UTC)) < MAX_TIME
    except OverflowError:
        inside = False
    if not inside:
        raise ValidationError({field: f"must be from {MIN_TIME:%Y-%m-%d} to {MAX_TIME:%Y-%m-%d} (UTC)"})
