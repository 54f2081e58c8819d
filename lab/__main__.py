"""`python -m pgwarden.lab VERB ...`: the network-namespace lab (see netlab.py)."""
import sys

from pgwarden.lab.netlab import main

sys.exit(main())
