"""The plug-in's own test: stmm's conformance check (shapes, determinism, safetensors round trip) plus the
weights convention. Run with the package installed: ``pip install -e . && pytest tests``."""

from __future__ import annotations

import pytest

from stmm_core.errors import WeightsUnavailable
from stmm_core.testing.conformance import check_component


def test_conformance():
    report = check_component("image_encoder", "tiny-cnn", {"width": 16, "input_size": 32})
    assert report.ok, str(report)
    assert {"shapes", "determinism", "save/load"} <= set(report.checks)


def test_weights_convention(tmp_path):
    import torch
    from safetensors.torch import save_file

    from stmm_core.plugins import get_catalogue

    info = get_catalogue().get("image_encoder", "tiny-cnn")
    torch.manual_seed(0)
    enc = info.build({"width": 16})
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(path))
    loaded = info.build({"width": 16, "weights": str(path)})
    tiles = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(enc.encode(tiles), loaded.encode(tiles))
    assert loaded.identity() != enc.identity()
    with pytest.raises(WeightsUnavailable):
        info.build({"weights": "pretrained"})
