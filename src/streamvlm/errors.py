"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class StreamvlmError(Exception):
    """Bad input or configuration, described in one line."""


class SourceError(StreamvlmError):
    """A frame source cannot deliver (missing, unreadable, corrupt, ended early, changed size)."""


class ModelLoadError(StreamvlmError):
    """A model directory or hub id cannot be loaded."""
