"""The one exception type for failures the user can fix.

Scripts print its message as a single line and exit non-zero, with no
traceback: the message names the file or flag and says what to do.
"""


class UserError(Exception):
    pass


def run_cli(main, argv=None):
    """Run a script's main: UserError -> one line on stderr and exit code 2."""
    import logging
    import sys
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
