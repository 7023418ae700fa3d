"""Space Ranger positions by column name: ≥ 2 (header, any column order), v1 (no header), parquet (Visium HD),
and one clear message for a header that lacks the needed columns."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from stmm_core.data.positions import POSITION_COLUMNS, read_positions
from stmm_core.data.readers import read_section
from stmm_core.errors import DataError

try:
    from tests.conftest_data import toy_visium  # noqa: F401 - fixture
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from conftest_data import toy_visium  # noqa: F401


def _toy_positions(toy_visium) -> pd.DataFrame:
    df = pd.read_csv(toy_visium / "spatial" / "tissue_positions_list.csv", header=None)
    df.columns = POSITION_COLUMNS
    return df


def _folder_with(toy_visium, tmp_path, write) -> "Path":  # noqa: F821
    out = tmp_path / "sr"
    shutil.copytree(toy_visium, out)
    (out / "spatial" / "tissue_positions_list.csv").unlink()
    write(out / "spatial")
    return out


def test_v1_without_header_still_read(toy_visium):
    pos = read_positions(toy_visium / "spatial" / "tissue_positions_list.csv")
    ref = _toy_positions(toy_visium).set_index("barcode")
    np.testing.assert_array_equal(pos["x"], ref["pxl_col_in_fullres"])
    np.testing.assert_array_equal(pos["y"], ref["pxl_row_in_fullres"])


def test_header_read_by_name_in_any_order(toy_visium, tmp_path):
    ref = read_section(toy_visium)
    df = _toy_positions(toy_visium)
    swapped = df[["barcode", "in_tissue", "array_row", "array_col", "pxl_col_in_fullres", "pxl_row_in_fullres"]]
    sec = read_section(_folder_with(toy_visium, tmp_path,
                                    lambda sp: swapped.to_csv(sp / "tissue_positions.csv", index=False)))
    np.testing.assert_array_equal(sec.coords, ref.coords)  # x and y not swapped by the column order
    assert not np.array_equal(ref.coords[:, 0], ref.coords[:, 1])


def test_parquet_positions(toy_visium, tmp_path):
    pytest.importorskip("pyarrow")
    ref = read_section(toy_visium)
    df = _toy_positions(toy_visium).sample(frac=1.0, random_state=1)
    sec = read_section(_folder_with(toy_visium, tmp_path,
                                    lambda sp: df.to_parquet(sp / "tissue_positions.parquet", index=False)))
    np.testing.assert_array_equal(sec.coords, ref.coords)


@pytest.mark.parametrize("drop", ["pxl_row_in_fullres", "barcode"])
def test_header_without_needed_columns_is_one_clear_error(toy_visium, tmp_path, drop):
    df = _toy_positions(toy_visium).drop(columns=[drop])
    if drop == "barcode":
        df.insert(0, "spot", _toy_positions(toy_visium)["barcode"])
    folder = _folder_with(toy_visium, tmp_path, lambda sp: df.to_csv(sp / "tissue_positions.csv", index=False))
    with pytest.raises(DataError) as exc:
        read_section(folder)
    msg = str(exc.value)
    assert f"{drop} missing" in msg and "--coords" in msg and "\n" not in msg


def test_header_with_non_numeric_pixels(toy_visium, tmp_path):
    df = _toy_positions(toy_visium)
    df["pxl_row_in_fullres"] = "row?"
    folder = _folder_with(toy_visium, tmp_path, lambda sp: df.to_csv(sp / "tissue_positions.csv", index=False))
    with pytest.raises(DataError, match="not numbers"):
        read_section(folder)
