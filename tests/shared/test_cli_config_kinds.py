"""The config file format with the check kinds of issue 23: a set with their secrets
applies, exports with the secrets redacted, and the export applied back keeps them."""

from __future__ import annotations

from pathlib import Path

from tests.controller.conftest import Running
from tests.shared.test_cli_config import cli, controller, write

__all__ = ["controller"]  # the fixture, used by name

SET = """
monitors:
  - name: checkout
    type: api_flow
    variables: {base: "https://shop.example"}
    secrets: {password: flow-s3cret}
    steps:
      - {name: login, method: POST, url: "{{base}}/login", body: "{{secrets.password}}"}
      - {url: "{{base}}/orders", headers: {Authorization: "Bearer step-s3cret"}}
    teardown: {url: "{{base}}/logout", headers: {X-Api-Key: teardown-s3cret}}
  - {name: cache, type: redis, host: 127.0.0.1, port: 6379, password: redis-s3cret}
  - {name: db, type: postgres, host: 127.0.0.1, password: pg-s3cret, query: "SELECT 1"}
  - {name: health, type: grpc, host: 127.0.0.1, port: 50051, metadata: {authorization: grpc-s3cret}}
  - {name: feed, type: websocket, url: "wss://feed.example/live"}
  - {name: mx, type: smtp, host: 127.0.0.1, tls: starttls}
  - {name: bastion, type: ssh, host: 127.0.0.1, host_key_fingerprints: ["SHA256:abc"]}
  - {name: broker, type: mqtt, host: 127.0.0.1, password: mqtt-s3cret, username: probe}
  - name: journey
    type: browser
    secrets: {pw: browser-s3cret}
    steps:
      - {action: goto, url: "https://shop.example/"}
      - {action: fill, selector: "#pw", value: "{{secrets.pw}}"}
"""


async def test_new_kinds_apply_export_redacted_and_reapply_keeping_their_secrets(
    controller: Running, tmp_path: Path
) -> None:
    original = write(tmp_path, SET)
    applied = await cli(controller, "apply", "-f", str(original), "--owner", "kinds")
    assert applied.exit_code == 0, applied.output
    out = tmp_path / "export.yaml"
    assert (await cli(controller, "export", "--owner", "kinds", "-o", str(out))).exit_code == 0
    text = out.read_text()
    assert "s3cret" not in text and "<redacted>" in text, text
    back = await cli(controller, "apply", "-f", str(out), "--owner", "kinds")
    assert back.exit_code == 0, back.output
    # Had the export's "<redacted>" been stored, the original would differ now.
    diff = await cli(controller, "diff", "-f", str(original), "--owner", "kinds")
    assert diff.exit_code == 0 and "0 to create, 0 to update, 0 to delete, 9 unchanged" in diff.output, (
        diff.output
    )
