"""``python -m udt.tools.wan``: the link's command line (:mod:`udt.tools.wan.cli`)."""

import sys

from udt.tools.wan.cli import main

if __name__ == "__main__":
    sys.exit(main())
