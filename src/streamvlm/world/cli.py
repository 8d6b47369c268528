"""`streamvlm world ...` subcommands."""


def register(subparsers) -> None:
    """Add the `world` subcommands to the top-level parser (none yet)."""
