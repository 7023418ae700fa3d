"""Ablations of Magic's contrastive stage 1, for ``stmm benchmark expression`` / ``retrieval``.

Two questions, each answered on the same leave-one-section-out folds as Magic and its baselines:

* **Does the decoder need stage 1?** Recipe ``magic-no-stage1``: the ``magic`` spec with
  ``train.stage1.epochs = 0``, so stage 2 loads (and freezes) the image encoder at its seeded random
  initialisation - the same initialisation stage 1 starts from - and trains the same decoder for the same
  stage-2 budget. It runs as an ordinary Magic fold; nothing here is needed for it.
* **Did stage 1 teach the image encoder anything a linear read-out can use?** Recipe ``stage1-ridge``
  (method ``stage1-ridge``): ``ridge-cv`` (penalty chosen by leave-one-training-section-out CV) on the pooled
  features of the **stage-1-trained** image encoder, to be compared with recipe ``init-ridge``: ``ridge-cv`` on
  the same encoder at its seeded initialisation (for the default feature-bank encoder: the same frozen bank,
  z-scored on the same training tiles, through the untrained MLP). :func:`stage1_image_encoder` trains stage 1 on the fold's training sections, or reuses
  a stage 1 that a Magic row of the same benchmark work folder already trained on them with the same stage-1
  settings (so the two rows read one and the same encoder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from stmm_core.spec import PipelineSpec


def _fingerprints(train_paths: Sequence[str]) -> list[str]:
    """Fingerprints of the training sections, as run folders record them (``sections_stage1``)."""
    from stmm_core.data.sanity import section_fingerprint
    from stmm_magic.pipeline import read_sections

    return [section_fingerprint(s) for s in read_sections(list(train_paths))]


def _trained_on(run_dir: Path, fingerprints: Sequence[str]) -> bool:
    """The run folder's stage 1 was trained on exactly these sections (by fingerprint, in this order)."""
    meta_file = run_dir / "magic.json"
    if not meta_file.is_file():
        return False
    try:
        recs = json.loads(meta_file.read_text()).get("sections_stage1") or []
    except (OSError, ValueError):
        return False
    return [str(r.get("fingerprint")) for r in recs] == [str(f) for f in fingerprints]


def find_stage1_run(spec: "PipelineSpec", train_paths: Sequence[str], search: Sequence[Path]) -> Path | None:
    """A run folder among *search* holding a finished stage 1 of *spec*'s stage-1 settings on *train_paths*."""
    from stmm_core.errors import StmmError
    from stmm_magic.run_io import STAGE_FILES, read_run_spec, stage1_parts

    want = stage1_parts(spec)
    prints: list[str] | None = None
    for run in search:
        if not (run / STAGE_FILES[1]).is_file():
            continue
        prints = prints if prints is not None else _fingerprints(train_paths)
        if not _trained_on(run, prints):
            continue
        try:
            other, _ = read_run_spec(run)
        except StmmError:
            continue
        if stage1_parts(other) == want:
            return run
    return None


def stage1_image_encoder(spec: "PipelineSpec", train_paths: Sequence[str], run_dir: Path,
                         reuse: Sequence[Path] = (), device: str = "cpu") -> tuple["nn.Module", dict[str, Any]]:
    """The image encoder of *spec* with stage-1-trained weights (eval mode, on CPU) and where they came from.

    A finished stage 1 among *reuse* (same stage-1 settings, same training sections) is read; otherwise stage 1
    is trained into *run_dir* (``fit_magic(..., stage=1)``).
    """
    from stmm_core.seeding import seed_everything
    from stmm_magic.model import load_prefixed, params_digest
    from stmm_magic.pipeline import build_component, fit_magic
    from stmm_magic.run_io import load_stage, offline_spec

    found = find_stage1_run(spec, train_paths, reuse)
    if found is None:
        found = find_stage1_run(spec, train_paths, [run_dir])
    info: dict[str, Any] = {"stage1_run": str(found or run_dir), "reused": found is not None}
    if found is None:
        meta = fit_magic(spec, list(train_paths), run_dir, stage=1, device=device, log=None, overwrite=True)
        info["stage1_seconds"] = (meta.get("timings") or {}).get("stage1_seconds")
        found = run_dir
    state = load_stage(found, 1, spec)
    seed_everything(int(spec.train.seed))
    enc = build_component(offline_spec(spec), "image")
    info["init_params_sha256"] = params_digest(enc)
    load_prefixed(enc, state, "image.")
    info["trained_params_sha256"] = params_digest(enc)
    return enc.eval(), info


def magic_runs_in(work_dir: Path, seed: int, held: str) -> list[Path]:
    """Magic run folders of one (seed, held-out section) in a benchmark work folder."""
    return sorted(p for p in (Path(work_dir) / "folds").glob(f"*/seed{seed}/{held}/run") if p.is_dir())


#: (with, without, what the pair measures): each row of an ablation is paired with its counterpart.
ABLATION_PAIRS = (
    ("magic", "magic-no-stage1", "Magic's decoder with stage 1 vs without (the frozen encoder before stage 1, same stage 2)"),
    ("stage1-ridge", "init-ridge", "ridge-cv on the stage-1 encoder vs on the same encoder before stage 1"),
)


def ablation_lines(rows: Sequence[Any], metrics: Sequence[str] = ("pearson_hvg50", "pearson_all")) -> list[str]:
    """One line per (pair, metric, fold group): the paired difference ``with - without`` over the (held-out
    section, seed) pairs both rows finished, its 95 % interval and sign test, and every pair's difference.
    *rows* are benchmark rows (``pipeline``, ``fold``/``dataset``, ``seed``, ``status``, ``metrics``)."""
    from stmm_core.benchmark.verdicts import paired_stats

    def values(name: str, metric: str) -> dict[tuple[str, Any], float]:
        return {(r.fold or r.dataset, r.seed): float(r.metrics[metric]) for r in rows
                if r.pipeline == name and r.status == "ok" and r.metrics.get(metric) is not None}

    out = []
    for with_, without, what in ABLATION_PAIRS:
        for metric in metrics:
            a, b = values(with_, metric), values(without, metric)
            keys = sorted(set(a) & set(b), key=lambda k: (str(k[0]), k[1]))
            if not keys:
                continue
            diffs = [a[k] - b[k] for k in keys]
            st = paired_stats(diffs)
            ci = (f"95% CI [{st['lo']:+.3f}, {st['hi']:+.3f}], " if "lo" in st else "")
            sign = f", sign test p={st['sign_p']:.2g}" if "sign_p" in st else ""
            each = ", ".join(f"{k[0]} s{k[1]} {d:+.3f}" for k, d in zip(keys, diffs))
            out.append(f"{what}: {metric} {with_} - {without} = {st['mean']:+.3f} ({ci}better in "
                       f"{st['wins']} of {st['n']}{sign}; {each})")
    return out
