"""The detached side: the process that owns the server, its log tee and its shutdown."""
