"""Parse-time checks of command-line values (typer callbacks): a bad value stops the command before any work,
with a usage message that names the flag."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer

#: numpy/torch seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def seed(value: Optional[int]) -> Optional[int]:
    """``--seed``: 0 … 2^32−1."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise typer.BadParameter(f"{value} is outside 0…{MAX_SEED} (seeds are 32-bit)")
    return value


def positive(value: Optional[float]) -> Optional[float]:
    """A finite number > 0 (``--scale``, ``--tile-px``)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} must be a positive number")
    return value


def more_data(value: Optional[list[Path]]) -> Optional[list[Path]]:
    """Extra positional data paths: a word like ``true`` after a flag (``--quiet true``) is a flag value typed by
    mistake, not a section."""
    for p in value or []:
        if str(p).strip().lower() in _BOOL_WORDS and not Path(p).exists():
            raise typer.BadParameter(f"{str(p)!r} is not a data path; flags such as --quiet and --no-cache take no "
                                     "value (write --quiet, not --quiet true)", param_hint="the data paths")
    return value


def device(value: Any) -> Any:
    """``--device``: auto, cpu, cuda or cuda:N."""
    text = str(value).strip().lower()
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise typer.BadParameter(f"{value!r}: use auto, cpu, cuda or cuda:N")


def unique_ids(value: bool) -> bool:
    """``--unique-ids``: the data readers make repeated spot ids and gene names unique (``STMM_UNIQUE_IDS=1`` for this command and
    the processes it starts; :func:`stmm_core.cli.main.main` restores the variable afterwards)."""
    import os

    if value:
        os.environ["STMM_UNIQUE_IDS"] = "1"
    return value


def counts_layer_for_all(value: str | None) -> str | None:
    """``stmm benchmark --counts-layer NAME``: every dataset the command reads takes its counts from
    ``layers[NAME]`` (``STMM_COUNTS_LAYER`` for this command and the processes it starts; restored afterwards)."""
    import os

    if value is not None:
        if not value.strip():
            raise typer.BadParameter("give a layer name (e.g. counts), raw for adata.raw, or X")
        os.environ["STMM_COUNTS_LAYER"] = value
    return value


UNIQUE_IDS = typer.Option(False, "--unique-ids", callback=unique_ids,
                          help="Make repeated spot ids and gene names unique (-1, -2, … appended to the repeats) "
                               "instead of refusing them; not for spot ids joined to --coords by id.")
