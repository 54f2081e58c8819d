"""pgwarden.postgres."""
