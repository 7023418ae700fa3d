"""Compare saved single-seed fits of several specs, section by section (Welch interval of each against the first).

    .venv/bin/python benchmarks/compare_fits.py --work W --sections 151676 151675 \
        --folders stereomm-expression@770f3e08 stereomm-expression@cb2aa28a

``--folders`` are sub-folders of ``--work`` written by ``consensus_dlpfc.py fit`` (``RECIPE@HASH8``);
the first is the reference. Each row: seeds found, ARI mean ± sd (min–max), and the difference of means to the
reference with its Welch 95 % interval (scipy's t distribution with Welch–Satterthwaite degrees of freedom).
Only seeds present in a folder count; nothing is refitted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _aris(folder: Path) -> dict[int, float]:
    out = {}
    for f in sorted(folder.glob("seed*.npz")):
        with np.load(f, allow_pickle=True) as d:
            out[int(f.stem[4:])] = float(d["ari"])
    return out


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Difference of means ``b - a`` and its Welch 95 % interval."""
    from scipy import stats

    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else 1.0
    t = stats.t.ppf(0.975, dof)
    d = b.mean() - a.mean()
    return float(d), float(d - t * se), float(d + t * se)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sections", nargs="+", required=True)
    ap.add_argument("--folders", nargs="+", required=True, help="the first is the reference")
    args = ap.parse_args()
    print("| section | fits | seeds | ARI mean ± sd (min–max) | − reference [Welch 95 %] |")
    print("|---|---|---|---|---|")
    for sec in args.sections:
        ref = None
        for name in args.folders:
            got = _aris(args.work / name / sec)
            if len(got) < 2:
                print(f"| {sec} | {name} | {len(got)} | (fewer than 2 seeds) | |")
                continue
            v = np.array(list(got.values()))
            cell = f"{v.mean():.3f} ± {v.std(ddof=1):.3f} ({v.min():.3f}–{v.max():.3f})"
            if ref is None:
                ref, diff = v, "reference"
            else:
                d, lo, hi = welch(ref, v)
                diff = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            print(f"| {sec} | {name} | {len(v)} | {cell} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
