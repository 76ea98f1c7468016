"""The checks ``invoke verify`` runs against a server, and their runner."""
