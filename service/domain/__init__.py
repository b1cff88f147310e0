"""Domain rules that know nothing of HTTP or SQL (pure functions and their errors)."""
