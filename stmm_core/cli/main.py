"""The ``stmm`` command. Start-up imports no torch/timm/PyG/scanpy: heavy work is imported inside commands.

Data goes to stdout; logs, progress and errors to stderr. User errors end in one line and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from stmm_core import __version__

app = typer.Typer(
    name="stmm",
    help="stmm: multimodal spatial transcriptomics pipelines from interchangeable plug-ins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stmm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """stmm: multimodal spatial transcriptomics pipelines from interchangeable plug-ins."""


def _register() -> None:
    from stmm_core.cli import benchmark_cmd, compose_cmd, demo_cmd, fit_cmd, hub_cmd, plugins_cmd, predict_cmd

    for module in (plugins_cmd, compose_cmd, fit_cmd, demo_cmd, predict_cmd, hub_cmd, benchmark_cmd):
        module.register(app)


_register()

_ARGV: list[str] | None = None


def current_argv() -> list[str]:
    """Arguments of the running ``stmm`` command, without the program name (e.g. to relaunch it)."""
    return list(_ARGV if _ARGV is not None else sys.argv[1:])


def _error(message: str) -> None:
    """One line on stderr; in a process of a multi-process run, left to the launcher (or to process 0)."""
    from stmm_core.distributed.launch import report_worker_error

    message = " ".join(part.strip() for part in str(message).splitlines() if part.strip())  # a library's text

    if not report_worker_error(message):
        typer.echo(f"stmm: error: {message}", err=True)


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """``(Exit, ClickException, Abort)`` classes of click and of typer: typer >= 0.20 vendors its own copy of
    click (``typer._click``, plus ``typer.exceptions``), whose command-line parsing errors are not click's."""
    import importlib

    found: dict[str, list[type]] = {"Exit": [], "ClickException": [], "Abort": []}
    for name in ("click.exceptions", "typer.exceptions", "typer._click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for kind, classes in found.items():
            cls = getattr(module, kind, None)
            if isinstance(cls, type) and cls not in classes:
                classes.append(cls)
    return tuple(found["Exit"]), tuple(found["ClickException"]), tuple(found["Abort"])


def _show_warnings_as_lines() -> None:
    """stmm's own warnings (data readers, components) print as ``stmm: warning: …``, not as Python source
    locations; warnings from other libraries keep Python's format."""
    import os
    import warnings

    roots = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        fn = str(filename)
        if issubclass(category, UserWarning) and (fn.startswith(roots) or f"{os.sep}stmm_" in fn):
            typer.echo(f"stmm: warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


class Terminated(BaseException):
    """SIGTERM, raised where the program is (not an ``Exception``: nothing swallows it; ``finally`` blocks run)."""


def _terminate_cleanly() -> None:
    """SIGTERM unwinds like Ctrl-C (staged outputs are removed on the way out) instead of killing outright."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):  # noqa: ANN001 - signal handler signature
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover - not the main thread of the main interpreter
        pass


def _usage_error(exc: Exception) -> None:
    """A command-line error on one line: ``stmm: error: <what> (see 'stmm CMD --help')``."""
    ctx = getattr(exc, "ctx", None)
    msg = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    where = f" (see '{ctx.command_path} --help')" if ctx is not None and getattr(ctx, "command_path", None) else ""
    typer.echo(f"stmm: error: {msg}{where}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: turns :class:`~stmm_core.errors.StmmError` and command-line usage errors into a short
    message on stderr (exit code 2), never a traceback."""
    from stmm_core.errors import StmmError

    global _ARGV
    _ARGV = list(argv) if argv is not None else sys.argv[1:]
    _show_warnings_as_lines()
    _terminate_cleanly()
    exit_types, click_errors, abort_types = _click_exceptions()
    from stmm_core.cli.help_format import plain_help

    command = plain_help(typer.main.get_command(app))
    import os

    # --unique-ids / benchmark --counts-layer set these for this command only
    env_before = {k: os.environ.get(k) for k in ("STMM_UNIQUE_IDS", "STMM_COUNTS_LAYER")}
    try:
        from stmm_core.env import check_environment

        if not {"-h", "--help", "--version"} & set(_ARGV):  # help works whatever the environment
            check_environment()
        rv = command.main(args=argv, prog_name="stmm", standalone_mode=False)
    except exit_types as exc:
        return int(exc.exit_code or 0)
    except click_errors as exc:
        _usage_error(exc)
        return int(exc.exit_code)
    except abort_types:
        typer.echo("stmm: aborted", err=True)
        return 130
    except StmmError as exc:
        _error(str(exc))
        return exc.exit_code
    except Terminated:
        typer.echo("stmm: terminated; partial output removed", err=True)
        return 143
    except KeyboardInterrupt:
        typer.echo("stmm: interrupted", err=True)
        return 130
    except OSError as exc:  # the file system refused (disk full, permissions, a path that vanished…)
        if os.environ.get("STMM_DEBUG"):
            raise
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        _error(f"{exc.strerror or exc}{where} (file system error; check free space and permissions, "
               "STMM_DEBUG=1 shows the traceback)")
        return 2
    except MemoryError:
        typer.echo("stmm: error: out of memory; try a smaller tile input size, fewer genes, or a GPU", err=True)
        return 3
    finally:
        for key, before in env_before.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
    return int(rv) if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
