"""`python -m pipeline backfill|stream|explain|validate ...`"""

import sys

from pipeline.cli import main

sys.exit(main(sys.argv[1:]))
