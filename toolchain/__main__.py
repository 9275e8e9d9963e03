"""`python -m toolchain` is the `edgec` command."""

import sys

from toolchain.cli.main import main

sys.exit(main())
