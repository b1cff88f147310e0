"""Marshmallow schemas: every request body and query string is validated here."""
