"""pgwarden.netroute."""
