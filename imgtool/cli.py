"""The imgtool command group, logging and verbosity, and the one place exit codes are decided."""

from __future__ import annotations

import logging
import os
import sys

import click

from . import __version__
from .commands import Outcome
from .errors import ImgtoolError
from .textsafe import printable

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_CODES = {Outcome.OK: EXIT_OK, Outcome.FAILURES: EXIT_FAILURES, Outcome.INTERRUPTED: EXIT_INTERRUPTED}

log = logging.getLogger("imgtool")


class _Formatter(logging.Formatter):
    def formatMessage(self, record):
        # File names and job fields are the sender's: one log line stays one line.
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record):
        msg = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"Error: {msg}"
        if record.levelno == logging.WARNING:
            return f"Warning: {msg}"
        return msg


def setup_logging(verbosity: int) -> None:
    """Log to stderr: warnings and errors at -1 (-q), information at 0, debugging above."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    root = logging.getLogger("imgtool")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _Verbosity:
    """What -q and -v said, before the command name or after it: the one reading of them.

    Each -v adds one; -q means -1 unless a -v was given too.  Logging follows
    at once, and main() shows tracebacks above 0.
    """

    def __init__(self):
        self.verbose = 0
        self.quiet = False

    @property
    def level(self) -> int:
        return -1 if self.quiet and not self.verbose else self.verbose

    def note(self, ctx: click.Context, param: click.Parameter, value) -> None:
        """The callback of every -v and -q option."""
        if not value:
            return
        if param.name == "quiet":
            self.quiet = True
        else:
            self.verbose += value
        ctx.find_root().ensure_object(dict)["verbose"] = self.level
        setup_logging(self.level)


_verbosity = _Verbosity()

VERBOSE_HELP = "More output; tracebacks for errors."
QUIET_HELP = "Only errors and the summary."


def verbosity_params() -> list[click.Option]:
    """-q/-v for after a command's name (``imgtool process DIR -q``), as before it; every command gets them."""
    return [
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_verbosity.note,
                     help=QUIET_HELP),
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_verbosity.note,
                     help=VERBOSE_HELP),
    ]


# Each command's module, imported only when that command runs (or help lists
# it), so that `imgtool process` does not pay for redis, watchdog and the rest.
LAZY_COMMANDS = {
    "process": "imgtool.commands.process",
    "watch": "imgtool.commands.watch",
    "queue": "imgtool.commands.queue",
    "enqueue": "imgtool.commands.queue",
    "status": "imgtool.commands.queue",
    "completion": "imgtool.completion",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and name not in self.commands:
            import importlib

            module = importlib.import_module(LAZY_COMMANDS[name])
            for command in module.COMMANDS:
                if command.name not in self.commands:
                    command.params.extend(verbosity_params())
                    self.add_command(command)
        return self.commands.get(name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="imgtool")
@click.option("-v", "--verbose", count=True, expose_value=False, callback=_verbosity.note, help=VERBOSE_HELP)
@click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_verbosity.note, help=QUIET_HELP)
@click.pass_context
def cli(ctx):
    """Make thumbnail, blur and low-quality WebP derivatives of images.

    \b
      imgtool process photo.jpg uploads/     files and folders, now
      imgtool watch uploads/                 new uploads as they land
      imgtool queue --redis HOST             jobs from the upload server's Redis queue
    """
    ctx.ensure_object(dict)["verbose"] = _verbosity.level
    setup_logging(_verbosity.level)


def main(argv=None) -> None:
    """Entry point: run the CLI, turning user errors into one line and an exit code."""
    try:
        rc = cli.main(args=argv, prog_name="imgtool", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.NoArgsIsHelpError as exc:
        # Bare `imgtool`: the usage and the commands, no "Error:" line; exit 2 as
        # click (8.2 on) and git do for a command line that asks for nothing.
        click.echo(exc.ctx.get_help(), err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ImgtoolError as exc:
        if _verbosity.level > 0:
            raise
        click.echo(f"Error: {printable(str(exc))}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug, not a user error: one line unless -v
        if _verbosity.level > 0:
            raise
        click.echo(f"Error: internal error: {type(exc).__name__}: {exc} (run with -v for details)", err=True)
        sys.exit(EXIT_FAILURES)
    sys.exit(EXIT_CODES.get(rc, EXIT_OK))


def run() -> None:
    """The console script: ``main``, then exit without tearing the interpreter down.

    By the time a command returns every output is written, renamed into place
    and closed, and every thread it started has stopped or is a daemon with
    nothing left to do; what remains at exit is freeing modules and memory,
    which takes 15-25 ms per run for nothing.  Streams and logging are flushed
    first.  A traceback (``-v``) still goes through the normal exit.
    """
    try:
        main()
    except SystemExit as exc:  # main always ends here, with an int code
        code = exc.code if isinstance(exc.code, int) else EXIT_OK
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)
