"""``python -m affedge``: the same command line as the ``affedge`` script."""
import sys

from affedge.cli import main

sys.exit(main())
