"""What the image branch of a fit could see: a resolution guard and a one-line caveat for random weights or a
coarse image, shared by the console summary, ``metrics.json``, the model card and the figure title.

A Visium spot is ~55 µm; on a lowres PNG it covers ~4 image pixels, which the encoder sees stretched to its input
size: a blur of the spot's mean colour, not tissue structure. Random encoder weights make any image a fixed
random projection of pixels. Either way the image features carry little of what a pretrained encoder would see on
a full-resolution image, and a user should know before reading the domains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.spec import PipelineSpec

#: Below this many image pixels across a spot the image is called coarse (a 16 px tile holds little texture).
MIN_SPOT_PX = 16.0

#: What to pass instead of a coarse image (the same words everywhere).
BETTER_IMAGE = ("a hires or full-resolution image: --image tissue_hires_image.png --scale TISSUE_HIRES_SCALEF "
                "(from scalefactors_json.json), or the full-resolution TIFF with --scale 1")


def spot_image_px(section: "Section") -> float | None:
    """Image pixels across one spot: spot diameter (else median spot spacing) × full-res → image scale."""
    if section.image is None or not section.image_scale:
        return None
    base = section.spot_diameter
    if not base:
        from scipy.spatial import cKDTree

        if section.n_spots < 2:
            return None
        dist, _ = cKDTree(section.coords).query(section.coords, k=2)
        base = float(np.median(dist[:, 1]))
    return float(base) * float(section.image_scale)


def random_weights(spec: "PipelineSpec") -> bool:
    """True when the spec's image encoder runs on randomly initialised weights."""
    ref = spec.components.get("image")
    return ref is not None and str(ref.params.get("weights", "")).lower() == "random"


def resolution_warning(px: float | None, image_key: str | None = None) -> str | None:
    """The resolution guard's one line, or ``None`` when a spot spans enough pixels. *image_key*: which image
    was used (``hires``/``lowres`` of Space Ranger or an .h5ad; anything else: a file the user gave)."""
    if px is None or px >= MIN_SPOT_PX:
        return None
    if image_key == "hires":
        instead = ("the full-resolution image (the TIFF given to Space Ranger): --image FILE --scale 1")
    elif image_key == "lowres":
        instead = BETTER_IMAGE
    else:
        instead = "a higher-resolution image: --image FILE --scale S (S = image px per full-resolution px; 1 for " \
                  "the full-resolution image)"
    return (f"a spot spans {px:.1f} image pixels (fewer than {MIN_SPOT_PX:.0f}): the image encoder sees an upsampled "
            f"blur of the spot's colour, not tissue structure; pass {instead}")


def image_caveat(spec: "PipelineSpec", section: "Section") -> dict[str, Any] | None:
    """``metrics.json``'s ``image_caveat`` block (``None`` when the spec has no image encoder or no image):
    ``spot_image_px``, ``coarse``, ``random_weights``, ``warning`` (the resolution guard) and ``line`` (the
    one-line summary shown in the console, model card and figure title; ``None`` when neither applies)."""
    ref = spec.components.get("image")
    if ref is None or section.image is None:
        return None
    px = spot_image_px(section)
    coarse = px is not None and px < MIN_SPOT_PX
    rand = random_weights(spec)
    weight_free = ref.name in ("stain-stats", "stain")
    problems = []
    if rand:
        problems.append(f"random {ref.name} weights")
    if coarse:
        problems.append(f"a coarse image ({px:.1f} px per spot)")
    line = None
    if problems:
        instead = []
        if rand:
            instead.append("pretrained weights (--set image.weights=pretrained)")
        if coarse:
            instead.append("the full-resolution image (--image FILE --scale 1)")
        line = (f"image branch ran on {' and '.join(problems)}: its features carry little tissue information, "
                f"so the domains rest on expression and position; pass {' and '.join(instead)}")
    key = (getattr(section, "meta", None) or {}).get("image_key")
    return {"image": {"hires": "hires image of the data", "lowres": "lowres image of the data",
                      "user": "the --image file"}.get(str(key), str(key) if key else None),
            "spot_image_px": None if px is None else round(px, 2), "coarse": coarse, "random_weights": rand,
            "weight_free_encoder": weight_free, "min_spot_px": MIN_SPOT_PX,
            "warning": resolution_warning(px, (getattr(section, "meta", None) or {}).get("image_key")),
            "line": line}


def short_caveat(caveat: dict[str, Any] | None) -> str | None:
    """A figure-title sized version of the caveat line."""
    if not caveat or not caveat.get("line"):
        return None
    bits = []
    if caveat.get("random_weights"):
        bits.append("random encoder weights")
    if caveat.get("coarse"):
        bits.append(f"coarse image ({caveat['spot_image_px']:.1f} px/spot)")
    return f"image branch: {' + '.join(bits)}: image features carry little tissue information"
