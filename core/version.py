"""The pgwarden version and the Patroni version whose formats it speaks."""

__version__ = "0.1.0"
PATRONI_COMPAT_VERSION = "4.1.4"
