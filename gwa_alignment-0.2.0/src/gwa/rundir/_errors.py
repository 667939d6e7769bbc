"""The run directory's errors and warnings."""


class RunDirError(ValueError):
    """A run directory is missing, incomplete, locked, corrupt, or of another format version."""


class RunDirWarning(UserWarning):
    """A run directory was read, but part of it was unreadable (the message says what and where)."""
