"""pgwarden.supervisor."""
