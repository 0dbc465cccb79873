"""The one exception type for failures the user can fix, and how scripts end on one.

Scripts print its message as a single line, `error: ...`, and exit with
status 2, with no traceback: the message names the file or flag and says
what to do.
"""
import sys


class UserError(Exception):
    pass


def first_line(error, limit=200):
    """The first line of an exception's message, cut (if at all) at a word, not inside one."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def run_cli(main, argv=None):
    """Run a script's main: a UserError or an operating-system failure (a full
    disk, a missing permission) -> one `error:` line on stderr, exit status 2."""
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main(argv)
    except UserError as e:
        return _fail(str(e))
    except OSError as e:  # what no check can see in advance; atomic writes left nothing half-written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return _fail(f"{where}{e.strerror or first_line(e)}; nothing was left half-written, "
                     "fix this and run again")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _fail(message):
    sys.stdout.flush()  # the error comes last, on a line of its own
    print("error: " + " ".join(message.split()), file=sys.stderr, flush=True)
    return 2
