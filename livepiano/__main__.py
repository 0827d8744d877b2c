"""``python -m livepiano``: the same as the ``livepiano`` command."""

import sys

from livepiano.cli import main

sys.exit(main())
