"""The `probefleet` command: wiring only; each role owns its own subcommands."""

from __future__ import annotations

import click

from shared.version import VERSION


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="probefleet")
def main() -> None:
    """probefleet: distributed uptime monitoring with multi-region consensus."""


def _register() -> None:
    from controller.cli import controller
    from probe.cli import probe
    from shared.devcmd import check_config, dev

    main.add_command(controller)
    main.add_command(probe)
    main.add_command(dev)
    main.add_command(check_config)


_register()

if __name__ == "__main__":
    main()
