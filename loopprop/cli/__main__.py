"""``python -m loopprop.cli``: the ``loopprop`` command."""

import sys

from . import main

sys.exit(main())
