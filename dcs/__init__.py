"""pgwarden.dcs."""
