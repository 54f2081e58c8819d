"""pgwarden.ctl."""
