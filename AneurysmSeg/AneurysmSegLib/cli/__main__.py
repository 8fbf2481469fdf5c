"""`python -m AneurysmSegLib.cli`: the same entry point as the `aneurysmseg` script."""

import sys

from . import main

sys.exit(main())
