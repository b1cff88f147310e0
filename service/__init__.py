"""BobGen: a durable, fast, observable store behind a REST API."""

__version__ = "0.1.0"
