"""``python -m udt.tools.impair`` (and running this file as a script): the relay's command line.

Everything lives in the package's modules, never in ``__main__``, so objects pickled to and from a
relay child (``Relay(process=True)``) have one class identity.
"""

import sys

from udt.tools.impair.cli import main

if __name__ == "__main__":
    sys.exit(main())
