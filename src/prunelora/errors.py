"""The one exception type that the CLI turns into a clean error line (exit code 2, no traceback)."""


class UserError(Exception):
    """A problem with the user's input (config, files, arguments) that the user can fix.

    The message is one line: what is wrong, then how to fix it.
    """
