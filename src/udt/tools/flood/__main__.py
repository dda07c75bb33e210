import sys

from udt.tools.flood.cli import main

sys.exit(main())
