"""Space Ranger spot/bin positions, read by column name.

* Space Ranger ≥ 2 ``tissue_positions.csv`` and Visium HD ``tissue_positions.parquet``: a header names the
  columns (``barcode, in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres`` in the
  documented order, but any order is read correctly);
* Space Ranger 1 ``tissue_positions_list.csv``/``.txt``: no header, the six columns in that order.

x = ``pxl_col_in_fullres``, y = ``pxl_row_in_fullres`` (full-resolution pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stmm_core.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
REQUIRED = ("barcode", "pxl_row_in_fullres", "pxl_col_in_fullres")
POSITION_FILES = ("tissue_positions.parquet", "tissue_positions.csv", "tissue_positions_list.csv",
                  "tissue_positions_list.txt")


def _has_header(path: Path) -> bool:
    """A first line with a non-numeric pixel field is a header (v1 files start with a barcode and numbers)."""
    with open(path) as fh:
        first = fh.readline().strip().split(",")
    if any(f.strip().strip('"').lower() in POSITION_COLUMNS for f in first):
        return True
    try:
        [float(f) for f in first[1:]]
    except ValueError:
        return True
    return False


def _by_name(df: "pd.DataFrame", path: Path) -> "pd.DataFrame":
    cols = {str(c).strip().strip('"').lower(): c for c in df.columns}
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise DataError(
            f"{path}: the header does not name the columns stmm needs ({', '.join(missing)} missing; found "
            f"{', '.join(map(str, list(df.columns)[:10]))}); a Space Ranger positions file has the columns "
            f"{', '.join(POSITION_COLUMNS)} — or pass --coords <table with id, x, y in full-resolution px>"
        )
    out = df.rename(columns={v: k for k, v in cols.items() if k in POSITION_COLUMNS})
    out = out[[c for c in POSITION_COLUMNS if c in out.columns]]
    return out.set_index("barcode")


def read_positions(path: str | Path) -> "pd.DataFrame":
    """Positions indexed by barcode with the Space Ranger columns present plus ``x``, ``y`` (full-res px).

    Raises :class:`DataError` naming the fix for an unreadable file, a header without the needed columns,
    a v1 file without six columns, or non-numeric pixel positions.
    """
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DataError(f"{path} is a parquet file: reading it needs pyarrow; install it with "
                                "pip install 'stmm[hd]' (or pip install pyarrow)") from None
            pos = _by_name(pd.read_parquet(path), path)
        elif _has_header(path):
            pos = _by_name(pd.read_csv(path, header=0), path)
        else:
            raw = pd.read_csv(path, header=None)
            if raw.shape[1] != 6:
                raise DataError(f"{path}: a positions file without a header needs 6 columns "
                                f"({', '.join(POSITION_COLUMNS)}), found {raw.shape[1]}")
            raw.columns = POSITION_COLUMNS
            pos = raw.set_index("barcode")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read positions {path}: {' '.join(str(exc).split())}; fix the file, or give the positions as a table with "
                        "--coords (columns id, x, y in full-res px; then the image with --image FILE --scale S)") from None
    pos.index = pos.index.astype(str)
    pos.index.name = "barcode"
    try:
        pos["x"] = pos["pxl_col_in_fullres"].astype(float)
        pos["y"] = pos["pxl_row_in_fullres"].astype(float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: pxl_row_in_fullres/pxl_col_in_fullres are not numbers ({exc})") from None
    return pos


def find_positions(folder: Path) -> Path:
    """The positions file of a Space Ranger ``spatial/`` folder (newest format first)."""
    for name in POSITION_FILES:
        if (folder / name).exists():
            return folder / name
    raise DataError(f"{folder}: no {' / '.join(POSITION_FILES)}; give the Space Ranger 'spatial' folder")
