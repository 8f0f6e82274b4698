"""``python -m gazerad.cli``: the same as the ``gazerad`` command."""

import sys

from gazerad.cli import main

sys.exit(main())
