"""Background jobs of the application (scheduled backups), beside the requests."""
