"""The Dockerfiles: hadolint clean (every rule, no ignores), and `make refresh-digests`
rewrites the pinned base. No image is built here: no registry is reachable to pull the
base from (docs/deploy.md, Images)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

HADOLINT = Path(sys.executable).parent / "hadolint"
PINNED = re.compile(r"^ARG PYTHON_IMAGE=(python:3\.11\.\d+-slim-bookworm)@(sha256:[0-9a-f]{64})$", re.M)


@pytest.mark.parametrize("role", ["controller", "probe"])
def test_hadolint_is_clean(role: str) -> None:
    done = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", str(DEPLOY / f"Dockerfile.{role}")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize("role", ["controller", "probe"])
def test_the_base_is_pinned_by_tag_and_digest(role: str) -> None:
    text = (DEPLOY / f"Dockerfile.{role}").read_text()
    assert PINNED.search(text)
    # Every stage starts from the pinned base, or from the dependencies stage built on it.
    assert {f.split()[0] for f in re.findall(r"^FROM (.+)$", text, re.M)} == {"${PYTHON_IMAGE}", "deps"}


def test_refresh_digests_moves_the_pin_to_the_tags_current_manifest(tmp_path: Path) -> None:
    # skopeo stands in for the registry: `inspect --raw` prints a manifest, whose sha256
    # is the digest.
    manifest = '{"schemaVersion":2,"manifests":[]}'
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    skopeo = bin_dir / "skopeo"
    skopeo.write_text(
        "#!/bin/sh\n"
        "[ \"$1 $2\" = 'inspect --raw' ] || exit 2\n"
        f'echo "$3" >> {tmp_path}/asked\n'
        f"printf '%s' '{manifest}'\n"
    )
    skopeo.chmod(0o755)
    files = []
    for role in ("controller", "probe"):
        copy = tmp_path / f"Dockerfile.{role}"
        shutil.copy(DEPLOY / f"Dockerfile.{role}", copy)
        files.append(copy)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["sh", str(DEPLOY / "refresh-digests.sh"), *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    want = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    for copy in files:
        found = PINNED.search(copy.read_text())
        assert found and found.group(2) == want
        original = (DEPLOY / copy.name).read_text()
        assert copy.read_text() == PINNED.sub(f"ARG PYTHON_IMAGE={found.group(1)}@{want}", original)
    tag = PINNED.search((DEPLOY / "Dockerfile.probe").read_text())
    assert tag
    assert (tmp_path / "asked").read_text().split() == [f"docker://docker.io/library/{tag.group(1)}"] * 2


@pytest.mark.parametrize("role", ["controller", "probe"])
def test_a_code_change_ships_only_a_small_layer(role: str) -> None:
    """The runtime stage takes the locked dependencies from the stage that installs only
    them, and the application from the build stage in layers of its own (measured with
    podman: 65 MB of dependencies for the probe, 97 MB for the controller, 6 MB of
    application)."""
    text = (DEPLOY / f"Dockerfile.{role}").read_text()
    runtime = text[text.rindex("\nFROM ") :]
    copies = re.findall(r"^COPY --from=(\w+) (\S+)", runtime, re.M)
    assert copies[0] == ("deps", "/opt/probefleet")
    assert {stage for stage, _ in copies[1:]} == {"build"}
    assert re.search(r"^FROM deps AS build$", text, re.M)
    deps = text[text.index("AS deps") : text.index("AS build")]
    assert "COPY shared" not in deps and "pip install --require-hashes" in deps


def test_the_build_context_is_only_what_the_dockerfiles_copy() -> None:
    """.dockerignore lets in the files the Dockerfiles COPY and nothing else (not .venv,
    .git or local data, which made the context hundreds of MB)."""
    ignore = (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") - 1].startswith("#") and "*" in ignore
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for role in ("controller", "probe"):
        text = (DEPLOY / f"Dockerfile.{role}").read_text()
        for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
            copied |= {
                source.split("/")[0] if source.startswith("requirements/") else source
                for source in sources.split()
            }
    assert copied == allowed
