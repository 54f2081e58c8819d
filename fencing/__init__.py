"""pgwarden.fencing."""
