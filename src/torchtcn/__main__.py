"""``python -m torchtcn COMMAND``: the same as the ``torchtcn`` command."""

import sys

from .cli import main

if __name__ == "__main__":  # (not when a test collector imports the module)
    sys.exit(main())
