"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class BadInput(Exception):
    """Input the user can fix: the message names the problem and the fix, in one line."""
