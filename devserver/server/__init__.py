"""The caller's side of a server's life: state file, start, readiness, stop, status."""
