"""SQL per domain, as plain functions taking a database handle."""
