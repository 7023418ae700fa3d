"""Demonstration: a Magic pipeline fitted with ``stmm fit SPEC`` on two sections, pushed to the loopback Hub
(stmm_core.testing.hub_server), pulled by commit into an empty cache, and ``stmm predict hf:org/name@commit`` in
a fresh process reproducing the fit's own predictions bit for bit. Every command runs as a user would (a fresh
``python -m stmm_core`` process); each is printed with its output. Tiny model (seconds on one CPU core).

    python benchmarks/hub_magic.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

TINY = ["--set", "image.model=test_vit", "--set", "image.img_size=32", "--set", "gene.n_genes=16",
        "--set", "gene.dim=16", "--set", "gene.depth=1", "--set", "gene.heads=2", "--set", "gene.dim_head=8",
        "--set", "gene.out_dim=16", "--set", "contrastive.embed_dim=16", "--set", "contrastive.queue_size=32",
        "--set", "fusion.dim=16", "--set", "fusion.heads=2", "--set", "fusion.ff_mult=2",
        "--set", "decoder.n_targets=12", "--set", "decoder.dim=16", "--set", "decoder.heads=2",
        "--set", "decoder.expansion=[16]", "--set", "decoder.n_eval_hvg=5",
        "--set", "train.stage1.epochs=2", "--set", "train.stage1.batch_size=16",
        "--set", "train.stage2.epochs=2", "--set", "train.stage2.batch_size=16", "-q"]


def stmm(args: list[str], env: dict[str, str], show: list[str] | None = None) -> str:
    print("$ stmm " + " ".join(show or args), flush=True)
    r = subprocess.run([sys.executable, "-m", "stmm_core", *args], capture_output=True, text=True,
                       env={**os.environ, **env})
    out = (r.stdout + r.stderr).strip()
    print(out + "\n", flush=True)
    if r.returncode != 0:
        raise SystemExit(f"exit {r.returncode}")
    return r.stdout


def main() -> None:
    import anndata as ad
    import numpy as np

    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_core.testing.hub_server import HubServer
    from stmm_core.testing.synthetic import make_synthetic_adata

    tmp = Path(tempfile.mkdtemp(prefix="stmm-hub-magic-"))
    secs = []
    for i in (1, 2, 3):
        p = tmp / f"s{i}.h5ad"
        make_synthetic_adata(n_spots=36, n_genes=40, n_domains=3, seed=i, image_scale=0.5).write_h5ad(p)
        secs.append(p)
    (tmp / "magic.json").write_text(compose_spec("magic", None, {}).pretty_json())
    base = {"STMM_THREADS": "1", "STMM_CACHE_DIR": str(tmp / "cache"), "STMM_PROGRESS": "0"}
    short = lambda a: [str(x).replace(str(tmp) + "/", "") for x in a]  # noqa: E731
    os.chdir(tmp)
    with HubServer() as hub:
        pusher = {**base, **hub.client_env(tmp / "pusher")}
        user = {**base, **hub.client_env(tmp / "user", token=False)}  # an empty cache, no token
        a = ["fit", "magic.json", "--data", "s1.h5ad", "s2.h5ad", "-o", "run", *TINY]
        stmm(a, base, short(a[:-len(TINY)]) + ["<tiny-model --set options>"])
        stmm(["predict", "run", "--data", "s3.h5ad", "-o", "local.h5ad"], base)
        out = stmm(["push", "run", "lab/tiny-magic"], pusher)
        commit = out.strip().rsplit("@", 1)[1]
        stmm(["pull", f"lab/tiny-magic@{commit}"], user)
        stmm(["predict", f"hf:lab/tiny-magic@{commit}", "--data", "s3.h5ad", "-o", "hub.h5ad"], user)
        x, y = ad.read_h5ad(tmp / "local.h5ad").X, ad.read_h5ad(tmp / "hub.h5ad").X
        print(f"predictions {x.shape[0]} spots x {x.shape[1]} genes; bit for bit equal: "
              f"{bool(np.array_equal(x, y))} (max |diff| {float(np.abs(x - y).max()):.1e}); "
              f"sha256 {__import__('hashlib').sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
