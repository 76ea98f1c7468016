"""Getting a server: resolve a release, download, verify, unpack, install into bin/."""
