"""`python -m pgwarden.lab VERB ...`: the network-namespace lab (see cli.py)."""
import sys

from pgwarden.lab.cli import main

sys.exit(main())
