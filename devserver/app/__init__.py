"""The application's processes: its environment, its API, its Procfile processes."""
