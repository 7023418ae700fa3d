"""report.html: one self-contained page per run (figures embedded), with confidence and markers when present;
rendered in headless Chromium when one is installed (skipped otherwise)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import anndata as ad
import numpy as np
import pandas as pd
import pytest

try:
    from tests.small_run import small_run  # noqa: F401 - fixture
except ImportError:  # pragma: no cover - tests/ not importable as a package
    from small_run import small_run  # noqa: F401

KEY_HEADINGS = ("Spatial domains over the image", "Training loss", "Metrics", "Spec", "Provenance")


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained_with_key_sections(small_run):
    out, _ = small_run
    text = (out / "report.html").read_text()
    for h in KEY_HEADINGS:
        assert f"<h2>{h}</h2>" in text
    assert not re.search(r'src="(?!data:)', text) and "<link" not in text  # nothing fetched from elsewhere
    imgs = _images(text)
    assert imgs[0] == (out / "domains.png").read_bytes() and (out / "loss.png").read_bytes() in imgs
    assert "ARI vs domain" in text and "content_sha256" in text and "model.safetensors sha256" in text
    assert '"torch"' in text and '"stmm"' in text


def test_confidence_and_markers_shown_when_present(small_run, tmp_path):
    from stmm_core.data.readers import read_section
    from stmm_core.report_html import render_report

    out, _ = small_run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    res = ad.read_h5ad(folder / "result.h5ad")
    section = read_section(folder / "result.h5ad", counts_layer="counts")
    before = render_report(folder, section, res, {}, "{}", "t")
    assert "Domain confidence" not in before and "Marker genes" not in before
    res.obs["stmm_domain_confidence"] = np.linspace(0.2, 1.0, res.n_obs).astype(np.float32)
    res.uns["stmm_markers"] = pd.DataFrame({"domain": ["0", "0", "1"], "rank": [1, 2, 1],
                                            "gene": ["SYM5", "SYM7", "SYM9"]})
    text = render_report(folder, section, res, {}, "{}", "t")
    assert "<h2>Domain confidence</h2>" in text and "<h2>Marker genes</h2>" in text
    assert "SYM5, SYM7" in text
    assert len(_images(text)) == len(_images(before)) + 1  # the confidence map


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_renders_in_headless_chromium(small_run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium/Chrome installed")
    from PIL import Image

    out, _ = small_run
    page = (out / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path}/p"]
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,2400", page],
                   capture_output=True, timeout=120)
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120).stdout
    n = len(_images((out / "report.html").read_text()))
    assert f'data-images-loaded="{n}/{n}"' in dom  # every embedded figure decoded in the browser
    for h in KEY_HEADINGS:
        assert h in dom
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(float)
    assert img.std() > 20  # not blank
    assert (np.abs(np.diff(img, axis=0)).sum(-1) > 30).mean() > 0.005  # figures, not a flat page
