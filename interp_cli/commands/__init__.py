"""Subcommands of the `interp` CLI, one module each (see `interp_cli.main`)."""
