"""The one interface every pipeline family implements (in the spirit of scvi-tools' model base class).

A family (registered by :class:`stmm_core.family.FamilyInfo`) points at a subclass of :class:`Pipeline`:

* :meth:`Pipeline.fit` — train *spec* on one or more sections and write the run folder (through the core's atomic
  writer); returns a :class:`FitOutcome` (metrics + the lines ``stmm fit`` prints).
* :meth:`Pipeline.load` — the trained pipeline from a (verified) run folder: spec, weights (safetensors),
  preprocessing state. Run folders carry ``manifest.json`` and ``README.md`` (model card) written by
  :func:`stmm_core.hub.pipeline_dir.finish_pipeline_dir`, so ``stmm push``/``pull`` work for every family.
* optional capabilities, each one method with a declared shape, offered when the family lists it in
  ``FamilyInfo.capabilities``:

  ========== ================================ =================================================================
  capability method                           returns
  ========== ================================ =================================================================
  embedding  :meth:`Pipeline.embed`           ``(n_spots, d)`` float32 (domains, ``stmm embed``, domains suite)
  expression :meth:`Pipeline.predict_expression` :class:`ExpressionPrediction`: ``(n_spots, n_genes)`` float32
                                              + gene names (``stmm predict``, expression suite)
  scoring    :meth:`Pipeline.score`           ``(n_spots, n_spots)`` image × expression similarity (row i: the
                                              image of spot i against every spot's expression; ``stmm evaluate``,
                                              retrieval suite)
  ========== ================================ =================================================================

The module-level functions (:func:`fit_spec`, :func:`load_trained`, :func:`embed`, :func:`predict_expression`,
:func:`score`) are what the CLI and the benchmark suites call: they find the family, check the capability (one
clear message naming the family when it is missing) and check the declared shapes. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

from stmm_core.errors import StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.family import FamilyInfo
    from stmm_core.spec import PipelineSpec


@dataclass
class FitRequest:
    """What ``stmm fit``/``stmm run`` ask of a family.

    ``data``: one or more section paths; ``options``: the family-specific command-line options that were given
    (names as in :attr:`stmm_core.family.FamilyInfo.fit_options`, e.g. ``n_domains``, ``labels``, ``image``);
    ``log``: progress lines for stderr."""

    data: list[Path]
    out_dir: Path
    device: str = "auto"
    progress: bool = True
    use_cache: bool = True
    overwrite: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = lambda msg: None


@dataclass
class FitOutcome:
    """The result of :meth:`Pipeline.fit`: the metrics written with the run and the human summary.

    ``rank`` is non-zero in a helper process of a data-parallel run (which writes and prints nothing)."""

    metrics: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    rank: int = 0


@dataclass
class ExpressionPrediction:
    """``values`` ``(n_spots, n_genes)`` float32 (the family's expression space, e.g. log1p-normalised) and the
    ``genes`` (length ``n_genes``)."""

    values: np.ndarray
    genes: list[str]
    space: str = ""
    #: the prediction is ``log1p(counts / total * target_sum)`` (lets the core compute the truth to compare with)
    target_sum: float | None = None
    #: genes to report first (e.g. the training sections' most variable ones, fixed at training time)
    eval_genes: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Base class of a pipeline family's implementation. Subclasses override :meth:`fit`, :meth:`load` and the
    capability methods they offer (and list them in their :class:`~stmm_core.family.FamilyInfo`)."""

    #: the family name (a spec's ``pipeline``)
    family: ClassVar[str] = ""

    def __init__(self, spec: "PipelineSpec", path: Path | None = None) -> None:
        self.spec = spec
        self.path = path

    # -- training and persistence ------------------------------------------------------------------
    @classmethod
    def fit(cls, spec: "PipelineSpec", request: FitRequest) -> FitOutcome:
        """Train *spec* on ``request.data`` and write ``request.out_dir`` (complete, or not at all)."""
        raise NotImplementedError(f"the {cls.family!r} pipeline family does not implement fit")

    @classmethod
    def load(cls, folder: Path, *, device: str = "cpu") -> "Pipeline":
        """The trained pipeline saved in *folder* (already verified against its manifest when pulled)."""
        raise NotImplementedError(f"the {cls.family!r} pipeline family does not implement load")

    @classmethod
    def from_loaded(cls, loaded: Any) -> "Pipeline":
        """From a verified :class:`stmm_core.hub.pipeline_dir.LoadedPipeline` (``stmm embed``, ``stmm pull``);
        default: :meth:`load` of its folder."""
        return cls.load(loaded.path)

    # -- capabilities --------------------------------------------------------------------------------
    def embed(self, section: "Section", *, device: str = "cpu", progress: bool = False) -> tuple[np.ndarray, dict]:
        """``(n_spots, d)`` float32 embedding of *section* and a dict describing the run (capability 'embedding')."""
        raise NotImplementedError

    def predict_expression(self, section: "Section", *, device: str = "cpu") -> ExpressionPrediction:
        """Expression predicted for every spot of *section* (capability 'expression')."""
        raise NotImplementedError

    def score(self, section: "Section", *, device: str = "cpu") -> np.ndarray:
        """``(n_spots, n_spots)`` image × expression similarities on *section* (capability 'scoring')."""
        raise NotImplementedError

    @classmethod
    def fit_section(cls, spec: "PipelineSpec", section: "Section", **kwargs: Any) -> Any:
        """Fit one (possibly combined) section in memory and return a :class:`stmm_core.pipeline.result.FitResult`
        (families whose fits cluster domains; ``--consensus`` fits its seeds through it)."""
        raise StmmError(f"the {cls.family!r} pipeline family does not fit single sections in memory "
                        "(needed by --consensus)")

    # -- optional overrides (generic defaults built on the capabilities) ----------------------------------
    def evaluate(self, data: Path, *, device: str = "cpu", options: dict[str, Any] | None = None,
                 log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[str]]:
        """Metrics on the section at *data* (``stmm evaluate``) and their human summary. Default: the core's
        generic evaluation (:mod:`stmm_core.pipeline_eval`) of whatever capabilities the family offers."""
        from stmm_core.pipeline_eval import evaluate_section, summary_lines
        from stmm_core.pipeline.run import load_section

        res = evaluate_section(self, load_section(data, image=None, keep_genes=True), device=device)
        return res, summary_lines(res)

    def predict_to_file(self, output: Path, *, data: Path | None = None, device: str = "cpu",
                        options: dict[str, Any] | None = None, log: Callable[[str], None] | None = None
                        ) -> dict[str, Any]:
        """``stmm predict``: write the predicted expression of every spot of *data* as AnnData (``X`` predictions,
        ``var_names`` genes, ``obsm["spatial"]``). Families override it to accept images without counts."""
        from stmm_core.pipeline_predict import predict_section_file

        return predict_section_file(self, output, data=data, device=device, options=options or {})

    # benchmark suites (stmm_core.benchmark.family_bench holds the generic defaults)
    @classmethod
    def bench_fold(cls, spec: "PipelineSpec", train: list[str], test: str, run_dir: Path, device: str,
                   method: str | None = None, context: dict[str, Any] | None = None) -> dict[str, Any]:
        """One leave-one-section-out fold: ``{"metrics": {...}, "details": {...}}`` (expression/retrieval suites).
        ``context``: ``{"work_dir", "seed", "held"}`` of the benchmark (e.g. to reuse another row's models)."""
        from stmm_core.benchmark.family_bench import generic_fold

        return generic_fold(cls, spec, train, test, run_dir, device, method)

    @classmethod
    def bench_domains(cls, spec: "PipelineSpec", path: str, read: Callable[[], "Section"], label: str, device: str,
                      work_dir: Path) -> tuple["Section", np.ndarray, int, dict[str, Any]]:
        """Domains of the section at *path* (``read()``: it as the suite reads it, cached), K from the *label*
        column: ``(section clustered, labels (n_spots,), K, details)`` (domains suite; the seed is
        ``spec.train.seed``; *work_dir* is this row's own folder)."""
        from stmm_core.benchmark.family_bench import generic_domains

        return generic_domains(cls, spec, path, read(), label, device, work_dir)

    @classmethod
    def bench_speed(cls, spec: "PipelineSpec", path: str, label: str | None, device: str) -> dict[str, Any]:
        """Stage times and memory of one fit in a fresh process: ``{"metrics", "details"}`` (speed suite)."""
        from stmm_core.benchmark.family_bench import generic_speed

        return generic_speed(cls, spec, path, label, device)


# -- what the CLI and the suites call -----------------------------------------------------------------------
def family_of(spec_or_name: Any) -> "FamilyInfo":
    from stmm_core.family import get_family

    return get_family(spec_or_name if isinstance(spec_or_name, str) else spec_or_name.pipeline)


def implementation(spec_or_name: Any) -> type[Pipeline]:
    """The :class:`Pipeline` subclass of a spec's family (imports it)."""
    fam = family_of(spec_or_name)
    cls = fam.load()
    if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
        raise StmmError(f"pipeline family {fam.name!r} ({fam.package or fam.plugin}): {fam.impl} is not a "
                        "stmm_core.pipeline_base.Pipeline subclass (broken plug-in; report it to its authors)")
    return cls


def check_options(spec: "PipelineSpec", options: dict[str, Any]) -> None:
    """Options a family does not take are refused with one message naming the family and the options."""
    fam = family_of(spec)
    given = sorted(k for k, v in options.items() if v not in (None, False) and k not in fam.fit_options)
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise StmmError(f"{flags}: not used by the {fam.name!r} pipeline family (it takes "
                        f"{', '.join('--' + o.replace('_', '-') for o in fam.fit_options) or 'no further options'})")


def fit_spec(spec: "PipelineSpec", request: FitRequest) -> FitOutcome:
    """Fit any family's spec (``stmm fit``, ``stmm run``)."""
    return implementation(spec).fit(spec, request)


def load_trained(folder: str | Path, *, device: str = "cpu") -> Pipeline:
    """The trained pipeline of a run folder, whatever its family (the spec says which)."""
    from stmm_core.spec import load_spec

    folder = Path(folder)
    if not (folder / "spec.json").is_file():
        raise StmmError(f"{folder} is not a stmm run folder (no spec.json)")
    spec = load_spec(folder / "spec.json")
    return implementation(spec).load(folder, device=device)


def embed(pipe: Pipeline, section: "Section", *, device: str = "cpu", progress: bool = False,
          what: str = "stmm embed") -> tuple[np.ndarray, dict]:
    family_of(pipe.spec).require("embedding", what)
    emb, info = pipe.embed(section, device=device, progress=progress)
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] != section.n_spots:
        raise StmmError(f"the {pipe.spec.pipeline!r} pipeline returned an embedding of shape {emb.shape}, not "
                        f"({section.n_spots}, d) (a bug in its plug-in)")
    return emb.astype(np.float32, copy=False), info


def predict_expression(pipe: Pipeline, section: "Section", *, device: str = "cpu",
                       what: str = "stmm predict") -> ExpressionPrediction:
    family_of(pipe.spec).require("expression", what)
    pred = pipe.predict_expression(section, device=device)
    vals = np.asarray(pred.values)
    if vals.ndim != 2 or vals.shape != (section.n_spots, len(pred.genes)):
        raise StmmError(f"the {pipe.spec.pipeline!r} pipeline returned predictions of shape {vals.shape} for "
                        f"{section.n_spots} spots and {len(pred.genes)} genes (a bug in its plug-in)")
    pred.values = vals.astype(np.float32, copy=False)
    return pred


def score(pipe: Pipeline, section: "Section", *, device: str = "cpu", what: str = "stmm evaluate") -> np.ndarray:
    family_of(pipe.spec).require("scoring", what)
    sim = np.asarray(pipe.score(section, device=device))
    if sim.shape != (section.n_spots, section.n_spots):
        raise StmmError(f"the {pipe.spec.pipeline!r} pipeline returned scores of shape {sim.shape}, not "
                        f"({section.n_spots}, {section.n_spots}) (a bug in its plug-in)")
    return sim


def build_component(spec: "PipelineSpec", slot: str) -> Any:
    """Instantiate the component in *slot* of *spec* (None when the slot is empty): the one place every family
    builds its components from a spec (kind from the family's slot table, parameters already validated)."""
    from stmm_core.plugins import get_catalogue

    ref = spec.components.get(slot)
    if ref is None:
        return None
    kind = family_of(spec).slots[slot][0]
    return get_catalogue().get(kind, ref.name).build(ref.params)


__all__ = ["Pipeline", "FitRequest", "FitOutcome", "ExpressionPrediction", "fit_spec", "load_trained", "embed",
           "predict_expression", "score", "build_component", "check_options", "implementation", "family_of"]
