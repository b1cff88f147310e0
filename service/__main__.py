"""Allow ``python -m service`` as an alias of the ``bobgen`` console script."""

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
