"""The one error type the CLI turns into a stderr line and an exit code."""


class ExportError(Exception):
    """A problem the user can act on; its message is the whole story."""

    exit_code = 1


class UsageError(ExportError):
    exit_code = 2
