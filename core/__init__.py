"""pgwarden.core."""
