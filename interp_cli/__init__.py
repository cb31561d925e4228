"""The `interp` command line: a front end on top of the libraries (`interp`, `circuits`) and
beside the dashboard. Nothing in `interp`, `circuits` or `kernels` imports it.

    interp --help            (the console script: interp_cli.main:main)
    python -m interp_cli --help

Each subcommand is a module in `interp_cli.commands`; `interp_cli.main` lists them.
"""
