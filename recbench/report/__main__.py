"""`python -m recbench.report`: see recbench/report/__init__.py."""

import sys

from recbench.report.cli import main

sys.exit(main())
