"""Spot-centred tiles (geometry, padding, order, real images) and the feature cache."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stmm_core.data.cache import FeatureCache, coords_hash, default_cache_root, tile_feature_key
from stmm_core.data.readers import read_section
from stmm_core.data.tiles import (
    auto_out_px, default_tile_fullres_px, extract_tiles, iter_tiles, tile_geometry,
)
from stmm_core.errors import DataError

try:
    from tests.conftest_data import (  # noqa: F401 - fixtures
        dlpfc_h5ad, her2st_c2_h5ad, isolated_cache, make_section, synthetic_image,
    )
except ImportError:  # pragma: no cover
    from conftest_data import dlpfc_h5ad, her2st_c2_h5ad, isolated_cache, make_section, synthetic_image  # noqa: F401


def grid_section(image=None, scale=1.0, spot_diameter=None, n=30):
    return make_section(n_spots=n, image=image if image is not None else synthetic_image(400, 400), scale=scale,
                        spot_diameter=spot_diameter)


# -------------------------------------------------------------------------------------------- geometry
def test_default_tile_size_and_auto_out_px():
    sec = grid_section()
    assert default_tile_fullres_px(sec) == pytest.approx(50.0)  # grid spacing (median nearest neighbour)
    sec_d = grid_section(spot_diameter=40.0)
    assert default_tile_fullres_px(sec_d) == 40.0
    assert auto_out_px(sec, 50.0, 224) == 64  # 50 px native → next multiple of 16
    assert auto_out_px(sec, 9.0, 224) == 32  # never below 32
    assert auto_out_px(sec, 1000.0, 224) == 224  # never above the encoder size
    g = tile_geometry(grid_section(scale=0.5))
    assert (g.tile_fullres_px, g.tile_image_px, g.out_px, g.image_scale) == (50.0, 25.0, 32, 0.5)
    assert tile_geometry(sec, 20.0, out_px=48).out_px == 48


def test_tiles_need_an_image():
    with pytest.raises(DataError, match="has no image"):
        next(iter_tiles(make_section(), 10.0, 32))
    with pytest.raises(DataError, match="positive number"):
        tile_geometry(grid_section(), -5.0)


# ---------------------------------------------------------------------------------------------- pixels
def test_tile_is_the_centred_crop_at_native_size():
    img = synthetic_image(200, 220)
    coords = np.array([[40.0, 50.0], [100.0, 120.5], [150.25, 60.75]])
    sec = make_section(n_spots=3, image=img, coords=coords)
    tiles = extract_tiles(sec, 16.0, 16)
    assert tiles.shape == (3, 3, 16, 16) and tiles.dtype == np.uint8
    np.testing.assert_array_equal(tiles[0].transpose(1, 2, 0), img[42:58, 32:48])  # centre (40, 50)
    # Half-pixel offset: bilinear sampling between neighbours, so within one grey level of their mean.
    ref = (img[112:128, 92:108].astype(float) + img[113:129, 92:108]) / 2
    assert np.abs(tiles[1].transpose(1, 2, 0) - ref).max() <= 1.0


def test_tiles_at_borders_are_padded():
    img = np.full((100, 120, 3), 10, np.uint8)
    coords = np.array([[0.0, 0.0], [119.9, 99.9], [60.0, 50.0]])
    sec = make_section(n_spots=3, image=img, coords=coords)
    for pad in (255, 0):
        t = extract_tiles(sec, 20.0, 20, pad_value=pad)
        tl, br, mid = (x.transpose(1, 2, 0) for x in t)
        assert (tl[:10, :10] == pad).all() and (tl[10:, 10:] == 10).all()  # top-left corner spot
        assert (br[:9, :9] == 10).all() and (br[11:, 11:] == pad).all()  # bottom-right corner spot
        assert (mid == 10).all()


def test_batches_keep_obs_order():
    img = synthetic_image(400, 400)
    sec = grid_section(image=img, n=30)
    batches = list(iter_tiles(sec, 30.0, 32, batch_size=8))
    assert [len(b) for b in batches] == [8, 8, 8, 6]
    whole = np.concatenate(batches)
    np.testing.assert_array_equal(whole, extract_tiles(sec, 30.0, 32))  # batching does not change tiles
    # reversed spot order → reversed tiles
    rev = make_section(n_spots=30, image=img, coords=sec.coords[::-1].copy())
    np.testing.assert_array_equal(extract_tiles(rev, 30.0, 32), whole[::-1])


# ------------------------------------------------------------------------------------------- real data
def test_dlpfc_lowres_tiles(dlpfc_h5ad):
    sec = read_section(dlpfc_h5ad)
    g = tile_geometry(sec, max_px=224)
    assert g.tile_fullres_px == pytest.approx(96.4, abs=0.5) and g.out_px == 32  # ≈4.3 lowres px → 32
    t0 = time.perf_counter()
    tiles = extract_tiles(sec, g.tile_fullres_px, g.out_px)
    elapsed = time.perf_counter() - t0
    assert tiles.shape == (3460, 3, 32, 32)
    assert elapsed < 10.0, f"tiling 3460 lowres spots took {elapsed:.1f}s"
    assert tiles.reshape(3460, -1).mean(1).mean() < 230  # spots lie on tissue


def test_her2st_fullres_tile_on_tissue(her2st_c2_h5ad):
    sec = read_section(her2st_c2_h5ad)
    g = tile_geometry(sec, max_px=224)
    assert 250 < g.tile_fullres_px < 300 and g.out_px == 224  # median spacing of the 200 µm grid
    tiles = extract_tiles(sec, g.tile_fullres_px, g.out_px)
    means = tiles.reshape(len(tiles), -1).mean(1)
    assert tiles.shape == (187, 3, 224, 224)
    assert means[0] < 230 and np.median(means) < 230  # H&E stained tissue, not white background
    assert sec.image.read_region(0, 0, 300, 300).mean() > means.mean()  # the slide corner is background


# ------------------------------------------------------------------------------------------------ cache
def test_cache_round_trip(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    key = cache.key("v1", "abc", 96, 32, {"b": 1, "a": [1, 2]})
    assert key == cache.key("v1", "abc", 96.0, 32, {"a": [1, 2], "b": 1})  # canonical JSON
    assert key != cache.key("v1", "abc", 96, 48, {"a": [1, 2], "b": 1})
    assert cache.get(key) is None and key not in cache
    arr = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    path = cache.put(key, arr)
    np.testing.assert_array_equal(cache.get(key), arr)
    assert cache.get(key).dtype == np.float32 and key in cache
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    path.write_bytes(b"corrupt")
    assert cache.get(key) is None and not path.exists()  # a corrupt entry is a miss
    with pytest.raises(ValueError):
        cache.path("../../etc/passwd")
    assert cache.clear() == 0


def test_second_encode_hits_the_cache(tmp_path):
    sec = grid_section()
    cache = FeatureCache(tmp_path)
    calls = []

    def encode():
        calls.append(1)
        tiles = extract_tiles(sec, 30.0, 32)
        return tiles.reshape(len(tiles), -1).mean(1, keepdims=True).astype(np.float32)

    key = tile_feature_key(sec, 30.0, 32, 255, "fake-encoder@1")
    first = cache.get_or_compute(key, encode)
    second = FeatureCache(tmp_path).get_or_compute(key, encode)
    assert len(calls) == 1 and np.array_equal(first, second)
    moved = make_section(n_spots=30, image=sec.image.to_array(), coords=sec.coords + 1.0)
    assert tile_feature_key(moved, 30.0, 32, 255, "fake-encoder@1") != key
    assert tile_feature_key(sec, 30.0, 32, 255, "fake-encoder@2") != key
    assert coords_hash(sec.coords) == coords_hash(sec.coords.copy()) != coords_hash(moved.coords)


def test_default_cache_root(isolated_cache):
    assert default_cache_root() == isolated_cache
    assert FeatureCache().root == isolated_cache
