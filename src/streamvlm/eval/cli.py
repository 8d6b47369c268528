"""`streamvlm eval ...` subcommands."""


def register(subparsers) -> None:
    """Add the `eval` subcommands to the top-level parser (none yet)."""
