"""``python -m fastvs.live ...``: ``fastvs forward ...``."""

import sys

from fastvs.live.cli import main

sys.exit(main())
