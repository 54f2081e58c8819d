"""pgwarden.lab."""
