"""`probefleet probe check --kind K --spec-file F --json` run in-process for the tests of the
kinds that take a spec file: the command (click, its own event loop, its exit code) in a
worker thread, so the loopback servers the test's loop serves keep answering. Cheaper than a
subprocess per kind (a Python start and the imports, about a second each here)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from probefleet.probe.cli import probe


async def probe_check(
    kind: str, fields: dict[str, Any], tmp_path: Path, *args: str
) -> tuple[int, dict[str, Any]]:
    """Exit code and the printed JSON result of checking `fields` (the file's content)."""
    spec_file = tmp_path / f"{kind}.yaml"
    spec_file.write_text(json.dumps({"type": kind, **fields}))  # JSON is YAML too
    return await check_by_hand("--kind", kind, "--spec-file", str(spec_file), *args)


async def check_by_hand(*args: str) -> tuple[int, dict[str, Any]]:
    """Exit code and the printed JSON result of `probefleet probe check ARGS --json`."""
    result = await asyncio.to_thread(CliRunner().invoke, probe, ["check", *args, "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)
