"""Log output for both roles: `text` (one line per event, as always) or `json` (JSON lines).

Log calls keep the project's style, a short event followed by `key=value` fields
(`log.info("probe joined probe_id=%s region=%s", ...)`). The JSON formatter splits them:
`{"time", "level", "logger", "message": "probe joined", "probe_id": ..., "region": ...}`,
adds the role's fixed fields (`role`, and a probe's `probe_id` and `region`), the request id
of the API request being served (`REQUEST_ID`, set by the controller's middleware), any
`extra=` fields, and the traceback as `exc`. The text format appends the request id.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from typing import Literal

LogFormat = Literal["text", "json"]

# The id of the API request this code runs for (controller/api/request_ids.py), if any.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# A field starts where ` name=` follows a space; its value runs to the next field or the end,
# so `error=cannot connect to host:1: refused` keeps its spaces.
_FIELD = re.compile(r"(?:^|\s)([a-z_][a-z0-9_]*)=")
# Attributes every LogRecord has; the others came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def split_fields(text: str) -> tuple[str, dict[str, object]]:
    """("probe joined", {"probe_id": "p1", "region": "eu-west"}) from
    "probe joined probe_id=p1 region=eu-west"; (text, {}) when it has no fields."""
    matches = list(_FIELD.finditer(text))
    if not matches:
        return text, {}
    fields: dict[str, object] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[m.end() : end].strip()
        fields[m.group(1)] = int(value) if value.isdigit() and len(value) < 19 else value
    return text[: matches[0].start()].strip(), fields


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        event, fields = split_fields(record.getMessage())
        doc: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": event,
            **self.static,
        }
        if (request_id := REQUEST_ID.get()) is not None:
            doc["request_id"] = request_id
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = REQUEST_ID.get()
        return line if request_id is None else f"{line} request_id={request_id}"


def formatter(fmt: LogFormat, **static: str) -> logging.Formatter:
    return JsonFormatter(static) if fmt == "json" else TextFormatter()


def setup(level: str | int, fmt: LogFormat = "text", **static: str) -> None:
    """Send every log record to stderr in `fmt`; `static` fields go into each JSON line.
    Calling it again replaces the handler (a probe learns its region after enrolling)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, **static))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_probefleet", False)]:
        root.removeHandler(old)
    handler._probefleet = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
