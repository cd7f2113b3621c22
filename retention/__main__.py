"""`python -m retention`: the same entry point as the `retention` console script."""

import sys

from retention.cli import main

sys.exit(main())
