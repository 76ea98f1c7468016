"""Getting a server: resolve, download, verify, unpack, install into bin/; which one runs."""
