"""pgwardenctl: operate a pgwarden (or Patroni 4) cluster like patronictl does.

Reads the DCS directly, acts through the members' REST APIs. Entry point: `main.main`.
"""
