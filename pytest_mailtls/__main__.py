"""``python -m pytest_mailtls``: the ``mailtls`` command.

PYTEST_DONT_REWRITE
"""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while still importing: nothing started yet, nothing to say
    sys.exit(130)

sys.exit(main())
