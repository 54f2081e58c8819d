"""pgwardenctl: placeholder entry point until the ctl issue lands."""
import sys


def main() -> int:
    print("pgwardenctl: no commands yet", file=sys.stderr)
    return 2
