"""The one exception type that reaches the user as a one-line message."""


class UserInputError(Exception):
    """Bad input from the user (a file, a param, a CLI value).

    The message must name the offending file or param and say how to fix it; the CLI prints
    it on one line as ``error: <message>`` and exits with status 1.
    """
