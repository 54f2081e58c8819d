"""pgwarden.workers."""
