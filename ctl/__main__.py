"""`python -m pgwarden.ctl` runs pgwardenctl (the console script's target)."""
import sys

from pgwarden.ctl.main import main

sys.exit(main())
