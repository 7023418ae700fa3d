"""``stmm … --nproc N``: run an ``stmm`` command in N processes on this machine, as ``torchrun --standalone``
does, with user errors kept to one line.

The launcher starts the processes through torch's elastic launcher in this process (not a ``torchrun``
subprocess, whose failure report is a multi-screen traceback). A process that stops on a user error
(:class:`~stmm_core.errors.StmmError`) prints nothing and leaves its message in a file of a folder the launcher
names in ``STMM_ERROR_DIR``; when any process fails the elastic agent stops the others (no process is left
waiting in a collective), and the launcher prints the message of the lowest failing rank as one line and exits
with 2. A crash (any other exception) keeps its traceback on stderr and the launcher ends with one line saying
which process failed, exit code 1.

``torchrun --nproc_per_node N -m stmm_core …`` started by hand also works: then process 0 prints user errors
and the others stay silent.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Folder where worker processes of a launch leave their user-error message (``rank<R>.txt``).
ERROR_DIR_ENV = "STMM_ERROR_DIR"


def report_worker_error(message: str) -> bool:
    """Called by the CLI for a user error. True when the message was handled here (the caller prints nothing):
    in a process of a multi-process run it is left for the launcher, or - started by hand with torchrun -
    printed by process 0 only."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return False
    rank = int(os.environ.get("RANK", "0") or 0)
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder:
        path = Path(folder) / f"rank{rank}.txt"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(message)
            os.replace(tmp, path)
            return True
        except OSError:  # the launcher's folder is gone: fall back to printing from process 0
            pass
    return rank != 0


def _first_error(folder: Path) -> str | None:
    found = sorted(folder.glob("rank*.txt"), key=lambda p: int(p.stem[4:]) if p.stem[4:].isdigit() else 1 << 30)
    for p in found:
        text = p.read_text().strip()
        if text:
            return text
    return None


def launch(nproc: int, argv: list[str], echo=None) -> int:
    """Run ``stmm <argv>`` in *nproc* processes (gloo/NCCL chosen by each process); return the exit code:
    0 when all succeed, 2 for a user error in any process (its message printed once), 1 for a crash."""
    import logging
    import tempfile
    import uuid

    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    from stmm_core.distributed.context import launch_command

    if echo is None:
        import typer

        def echo(msg: str) -> None:
            typer.echo(msg, err=True)

    old = os.environ.get(ERROR_DIR_ENV)
    with tempfile.TemporaryDirectory(prefix="stmm-launch-") as tmp:
        os.environ[ERROR_DIR_ENV] = tmp
        logging.disable(logging.CRITICAL)  # the elastic agent's own reports; workers keep their stderr
        try:
            args = torchrun.parse_args(launch_command(nproc, argv)[3:])
            args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
            config, cmd, cmd_args = torchrun.config_from_args(args)
            elastic_launch(config, cmd)(*cmd_args)
            return 0
        except ChildFailedError as exc:
            message = _first_error(Path(tmp))
            if message is not None:
                echo(f"stmm: error: {message}")
                return 2
            failures = getattr(exc, "failures", {}) or {}
            if failures:
                r, failure = min(failures.items())
                echo(f"stmm: error: process {r} of {nproc} failed (exit code {failure.exitcode}); "
                     "its messages are above")
            else:
                echo(f"stmm: error: a process of {nproc} failed; its messages are above")
            return 1
        finally:
            logging.disable(logging.NOTSET)
            if old is None:
                os.environ.pop(ERROR_DIR_ENV, None)
            else:
                os.environ[ERROR_DIR_ENV] = old
