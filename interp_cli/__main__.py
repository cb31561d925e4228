"""`python -m interp_cli ...` runs the `interp` command line."""

import sys

from interp_cli.main import main

sys.exit(main())
