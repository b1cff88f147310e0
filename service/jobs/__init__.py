"""The application's jobs beside the requests: seeding, importing a dump, scheduled backups."""
