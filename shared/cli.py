"""The `probefleet` command: the root only. Each role adds its own commands through the
`probefleet.commands` entry points (pyproject.toml), loaded when they are used, so shared/
imports neither role and a probe host running `probefleet probe run` never imports the
controller."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import click

from probefleet.shared.version import VERSION

ROLES = ("controller", "probe")


def _commands() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group="probefleet.commands")}


class RootGroup(click.Group):
    """Built-in commands plus one per `probefleet.commands` entry point."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (ep := _commands().get(cmd_name)):
            command = ep.load()
        return command


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="probefleet")
def main() -> None:
    """probefleet: distributed uptime monitoring with multi-region consensus."""


@main.command("check-config")
@click.option("--role", type=click.Choice(ROLES), default="controller", show_default=True)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def check_config(ctx: click.Context, role: str, config_path: Path | None) -> None:
    """Validate configuration (file plus PROBEFLEET_* variables) and print it, secrets
    redacted: `probefleet ROLE check-config` of the role."""
    group = main.get_command(ctx, role)
    assert isinstance(group, click.Group)
    command = group.get_command(ctx, "check-config")
    assert command is not None
    ctx.invoke(command, config_path=config_path)


if __name__ == "__main__":
    main()
