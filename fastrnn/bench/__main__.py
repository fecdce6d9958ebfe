"""python -m fastrnn.bench: the same options as `fastrnn bench`."""

import sys

from .cli import main

sys.exit(main())
