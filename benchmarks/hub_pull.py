"""What pulling an already-cached pipeline adds to ``stmm embed``/``stmm fit``: pull + verify time, against the
loopback Hub (stmm_core.testing.hub_server), for a pinned commit (no network at all), a branch (one revision
request) and offline. Prints seconds (median of repeats)."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    os.environ.setdefault("STMM_THREADS", "1")
    from stmm_core.cli.compose_cmd import compose_spec
    from stmm_graph_fusion.run import fit_to_dir
    from stmm_core.testing.hub_server import HubServer
    from stmm_core.testing.synthetic import make_synthetic_adata

    tmp = Path(tempfile.mkdtemp(prefix="stmm-hub-bench-"))
    data = tmp / "section.h5ad"
    make_synthetic_adata(n_spots=400, n_genes=200, n_domains=4, seed=0).write_h5ad(data)
    spec = compose_spec("stereomm", None, {"image.weights": "random", "image.model": "resnet18", "train.epochs": 20})
    fit_to_dir(spec, data, tmp / "run", n_domains=4, progress=False)
    with HubServer() as hub:
        os.environ.update(hub.client_env(tmp / "hf"))
        from stmm_core.hub.remote import pull, push

        commit = push(tmp / "run", "bench/pipeline")["commit"]
        size = sum((tmp / "run" / f).stat().st_size for f in ("model.safetensors", "spec.json", "preprocess.json"))
        t = time.perf_counter()
        pull(f"bench/pipeline@{commit}")
        first = time.perf_counter() - t
        rows = {"first pull (download + verify)": [first]}
        for label, ref, offline in (("cached, pinned commit", f"bench/pipeline@{commit}", None),
                                    ("cached, branch main (1 request)", "bench/pipeline", None),
                                    ("cached, offline", f"bench/pipeline@{commit}", True)):
            times = []
            for _ in range(7):
                t = time.perf_counter()
                pull(ref, offline=offline, warn=lambda m: None)
                times.append(time.perf_counter() - t)
            rows[label] = times
    print(f"pipeline: {size / 1e6:.2f} MB of weights/spec/state; {sys.platform}, python {sys.version.split()[0]}")
    for label, times in rows.items():
        print(f"{label:<36} {statistics.median(times) * 1000:8.1f} ms (median of {len(times)})")


if __name__ == "__main__":
    main()
