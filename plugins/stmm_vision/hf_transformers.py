"""Hugging Face ``transformers`` vision models (``AutoModel``) as frozen tile encoders: Phikon, Phikon-v2, any
ViT/DINOv2-like model on the Hub by name.

* The name is ``org/name[@revision]``; the revision is resolved to a commit once (through the fast-failing Hub
  access of :mod:`stmm_vision.encoders`: offline, unreachable, gated, missing repo or revision are one-line
  :class:`~stmm_core.errors.WeightsUnavailable` errors), every file is fetched for that commit, and the model is
  then built by the real ``AutoModel.from_pretrained(repo, revision=commit, local_files_only=True)`` from the
  cache: safetensors only (``use_safetensors=True``), never ``trust_remote_code``.
* Loading is strict: missing, unexpected or mis-shaped keys are an error. The one exception is a pooler head the
  checkpoint does not hold (ViT checkpoints saved without one, e.g. Phikon) when ``pool`` does not use it: the
  randomly initialised pooler is removed instead of being kept around unused.
* Preprocessing (input size, mean, std, rescale factor, resampling) comes from the model's own image-processor
  config (``AutoImageProcessor``), never guessed. A tile is already the region of interest, so a processor's
  resize-then-centre-crop becomes a resize to the crop size (as :mod:`stmm_vision.encoders` ignores timm's
  ``crop_pct``); tiles cut by the pipeline already have that size and are not resized at all.
* The embedding is the class token of ``last_hidden_state`` (``pool="cls"``), the mean of the patch tokens with
  the class and register tokens excluded (``mean``), both concatenated (``cls+mean``) or ``pooler_output``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stmm_core.errors import SpecError, WeightsUnavailable
from stmm_core.interfaces import ImageEncoder, ImagePreprocessing
from stmm_vision.tile_input import check_tiles

from .encoders import _commit_of, _hub_download, _sha256_file, _short, _state_digest
from .params import TransformersEncoderParams

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_WEIGHTS = "model.safetensors"
_INDEX = "model.safetensors.index.json"
#: PIL resampling filters (``PIL.Image.Resampling``) → torch interpolation modes.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "bicubic", 4: "area", 5: "bicubic"}
_RESAMPLE_NAME = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _quiet_transformers() -> Any:
    """transformers' own logger at error level (its load report is replaced by the strict check below)."""
    from transformers.utils import logging as tlog

    before = tlog.get_verbosity()
    tlog.set_verbosity_error()
    return before


def _side_of(size: Any) -> tuple[int, int] | None:
    """(height, width) of an image-processor ``size``/``crop_size`` (dict or SizeDict), or None."""
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    h, w = get("height"), get("width")
    if h and w:
        return int(h), int(w)
    edge = get("shortest_edge")
    if edge:
        return int(edge), int(edge)
    return None


def preprocessing_from_processor(proc: Any) -> tuple[ImagePreprocessing, float, str]:
    """``(preprocessing, rescale factor, torch interpolation mode)`` from an image processor's configuration.

    The network input is the processor's crop size when it centre-crops, else its resize target; mean/std are
    its normalisation (identity when ``do_normalize`` is false); pixels are multiplied by ``rescale_factor``.
    """
    where = type(proc).__name__
    crop = _side_of(getattr(proc, "crop_size", None)) if getattr(proc, "do_center_crop", False) else None
    hw = crop or _side_of(getattr(proc, "size", None))
    if hw is None:
        raise SpecError(f"the image processor ({where}) declares no input size (size/crop_size); stmm does not "
                        "guess one: add it to the model's preprocessor_config.json")
    if hw[0] != hw[1]:
        raise SpecError(f"the image processor ({where}) asks for non-square inputs {hw}; tiles are square")
    if getattr(proc, "do_normalize", True):
        mean, std = getattr(proc, "image_mean", None), getattr(proc, "image_std", None)
        if mean is None or std is None:
            raise SpecError(f"the image processor ({where}) normalises but declares no image_mean/image_std")
        mean = [float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)]
        std = [float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3)]
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    rescale = float(getattr(proc, "rescale_factor", 1 / 255)) if getattr(proc, "do_rescale", True) else 1.0
    resample = getattr(proc, "resample", 3)
    resample = int(getattr(resample, "value", resample) if resample is not None else 3)
    prep = ImagePreprocessing(input_size=hw[0], mean=tuple(mean), std=tuple(std),  # type: ignore[arg-type]
                              interpolation=_RESAMPLE_NAME.get(resample, str(resample)))
    return prep, rescale, _RESAMPLE.get(resample, "bicubic")


class TransformersImageEncoder(nn.Module, ImageEncoder):
    """A frozen ``transformers`` vision model: uint8 tiles ``(B, 3, H, W)`` → float32 ``(B, out_dim)``.

    Attributes:
        model: the ``AutoModel`` (eval mode, no gradients).
        out_dim: embedding width (hidden size, twice it for ``cls+mean``).
        preprocessing: input size, mean, std and interpolation from the model's image processor.
        rescale_factor: multiplies uint8 pixel values before normalisation (the processor's, usually 1/255).
        num_prefix_tokens: class + register tokens at the start of ``last_hidden_state``.
        weights_info: repo, commit, sha256 of the weights (or the seed of random weights), JSON-able.
    """

    fixed_input_size = True

    def __init__(self, params: TransformersEncoderParams) -> None:
        nn.Module.__init__(self)
        ImageEncoder.__init__(self, params)
        from stmm_core.compat import ensure_torchvision

        ensure_torchvision()  # transformers' vision imports may pull in torchvision
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        self._version = transformers.__version__
        self._digest: str | None = None
        self.weights_info: dict[str, Any] = {}
        name = params.model.strip()
        src, load_kw = self._fetch(name, params)

        before = _quiet_transformers()
        try:
            try:
                config = AutoConfig.from_pretrained(src, trust_remote_code=False, **load_kw)
                proc = AutoImageProcessor.from_pretrained(src, trust_remote_code=False, **load_kw)
            except (OSError, ValueError, KeyError) as exc:
                raise SpecError(f"{name} is not a transformers vision model stmm can build ({_short(exc)}); it needs "
                                "config.json with a model_type transformers knows and preprocessor_config.json "
                                "(custom code is never run)") from None
            # model_kwargs: configuration attributes update the config, the rest go to the model's constructor
            model_kw = {k: v for k, v in params.model_kwargs.items() if not hasattr(config, k)}
            for k, v in params.model_kwargs.items():
                if hasattr(config, k):
                    setattr(config, k, v)
            if params.weights == "random":
                self.weights_info.update(source="random", seed=int(torch.initial_seed()))
                model = AutoModel.from_config(config, **model_kw)
            else:
                try:
                    model, report = AutoModel.from_pretrained(
                        src, config=config, use_safetensors=True, trust_remote_code=False, output_loading_info=True,
                        **load_kw, **model_kw)
                except (OSError, ValueError, RuntimeError) as exc:
                    raise WeightsUnavailable(f"cannot load the weights of {name} ({_short(exc)})") from None
                self._check_strict(name, model, report, params.pool)
        finally:
            from transformers.utils import logging as tlog

            tlog.set_verbosity(before)

        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.config = config
        self.model_name = name
        self.preprocessing, self.rescale_factor, self._mode = preprocessing_from_processor(proc)
        self.max_input_size = int(self.preprocessing.input_size)
        self.min_input_size = self.max_input_size
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        hidden = getattr(config, "hidden_size", None)
        if hidden is None and getattr(config, "hidden_sizes", None):
            hidden = config.hidden_sizes[-1]
        if hidden is None:
            raise SpecError(f"{name}: its config declares no hidden_size; stmm cannot tell the embedding width")
        self.out_dim = int(hidden) * (2 if params.pool == "cls+mean" else 1)
        self.pool_type = params.pool
        self.register_buffer("_mean", torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.preprocessing.std).view(1, 3, 1, 1), persistent=False)

    # -- construction helpers ------------------------------------------------------------------------------------

    def _fetch(self, name: str, params: TransformersEncoderParams) -> tuple[str, dict[str, Any]]:
        """Resolve *name* to a commit and fetch its files into the Hub cache: ``(source, from_pretrained kwargs)``."""
        if name.startswith("local-dir:"):
            folder = Path(name.partition(":")[2]).expanduser()
            if not (folder / "config.json").is_file():
                raise WeightsUnavailable(f"{folder}/config.json not found; local-dir: needs a save_pretrained folder")
            self.weights_info.update(source="local-dir")
            if params.weights == "pretrained":
                wfile = folder / _WEIGHTS
                if not wfile.is_file() and not (folder / _INDEX).is_file():
                    raise WeightsUnavailable(f"{folder} has no {_WEIGHTS} (stmm loads safetensors only)")
                self._record_sha(wfile if wfile.is_file() else folder / _INDEX, params)
            return str(folder), {}
        repo_id, _, revision = name.partition("@")
        if not _REPO.match(repo_id):
            raise SpecError(f"image.model={name!r}: expected a Hub model id org/name[@revision] or local-dir:/path")
        cfg_path = _hub_download(name, repo_id, "config.json", revision or None)
        commit = _commit_of(str(cfg_path))
        if commit is None:
            raise WeightsUnavailable(f"cannot tell which commit of {repo_id} was downloaded ({cfg_path})")
        self.weights_info.update(source="hf-hub", repo=repo_id, commit=commit)
        if _hub_download(name, repo_id, "preprocessor_config.json", commit, missing_ok=True) is None:
            raise SpecError(f"{repo_id}@{commit[:12]} has no preprocessor_config.json: stmm takes the input size, mean "
                            "and std from it and never guesses them")
        if params.weights == "pretrained":
            wfile = _hub_download(name, repo_id, _WEIGHTS, commit, missing_ok=True)
            if wfile is None:
                index = _hub_download(name, repo_id, _INDEX, commit, missing_ok=True)
                if index is None:
                    raise WeightsUnavailable(
                        f"{repo_id}@{commit[:12]} has no {_WEIGHTS} (stmm loads safetensors weights only, never "
                        "pickled checkpoints); offline, it is not in the local cache")
                shards = sorted(set(json.loads(Path(index).read_text()).get("weight_map", {}).values()))
                for shard in shards:
                    _hub_download(name, repo_id, shard, commit)
                wfile = index
            self._record_sha(Path(wfile), params)
        return repo_id, {"revision": commit, "local_files_only": True}

    def _record_sha(self, path: Path, params: TransformersEncoderParams) -> None:
        sha = _sha256_file(path)
        if params.sha256 and sha != params.sha256:
            raise WeightsUnavailable(
                f"weights file {path.name} of {params.model} has sha256 {sha}, expected {params.sha256}: corrupted or a "
                "different version; delete the cached file to re-download it, or update image.sha256")
        self.weights_info.update(sha256=sha, file=path.name)

    @staticmethod
    def _check_strict(name: str, model: nn.Module, report: dict[str, Any], pool: str) -> None:
        missing = list(report.get("missing_keys") or [])
        unexpected = list(report.get("unexpected_keys") or [])
        mismatched = [k[0] if isinstance(k, (tuple, list)) else k for k in (report.get("mismatched_keys") or [])]
        if missing and pool != "pooler" and all(k.startswith("pooler.") for k in missing) \
                and getattr(model, "pooler", None) is not None:
            model.pooler = None  # randomly initialised and unused by the embedding: removed, not kept
            missing = []
        if missing or unexpected or mismatched:
            parts = [f"{len(keys)} {label} (e.g. {', '.join(sorted(keys)[:3])})"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
                     if keys]
            raise WeightsUnavailable(f"the weights of {name} do not match the model its config.json describes: "
                                     f"{'; '.join(parts)}")

    # -- encoding ------------------------------------------------------------------------------------------------

    def _prepare(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → ``pixel_values`` (rescaled, resized to the input size, normalised)."""
        side = self.max_input_size
        x = tiles.to(self._mean.device).float() * self.rescale_factor
        if x.shape[-2:] != (side, side):
            down = side < max(x.shape[-2:])
            if self._mode in ("nearest", "area"):
                x = F.interpolate(x, size=(side, side), mode=self._mode)
            else:
                x = F.interpolate(x, size=(side, side), mode=self._mode, align_corners=False, antialias=down)
        return (x - self._mean) / self._std

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        if self.pool_type == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise SpecError(f"{self.model_name} has no pooler output; use image.pool=cls or mean")
            return pooled.flatten(1)
        h = out.last_hidden_state
        if h.ndim == 4:  # convolutional models: (B, C, h, w)
            if self.pool_type != "mean":
                raise SpecError(f"{self.model_name} has no class token (convolutional); use image.pool=mean or pooler")
            return h.mean(dim=(2, 3))
        patches = h[:, self.num_prefix_tokens:]
        if self.pool_type == "cls":
            return h[:, 0]
        if self.pool_type == "mean":
            return patches.mean(1)
        return torch.cat([h[:, 0], patches.mean(1)], dim=-1)

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → float32 ``(B, out_dim)``."""
        tiles = check_tiles(tiles)
        if tiles.shape[0] == 0:
            return torch.empty(0, self.out_dim, dtype=torch.float32, device=self._mean.device)
        self.model.eval()
        bs = int(self.params.batch_size)
        with torch.inference_mode():
            out = [self._embed(self._prepare(tiles[i : i + bs])).float() for i in range(0, tiles.shape[0], bs)]
        return torch.cat(out) if len(out) > 1 else out[0]

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:  # nn.Module protocol
        return self.encode(tiles)

    def identity(self) -> str:
        """``transformers/<repo>@<commit>;sha256=..;pool=..;size=..;transformers=<version>`` (random weights: seed
        and a digest of the initialised parameters)."""
        info = self.weights_info
        if info.get("source") == "random":
            if self._digest is None:
                self._digest = _state_digest(self.model)
            w = f"random(seed={info.get('seed')});params-sha256={self._digest[:32]}"
        else:
            w = f"{info.get('source')}:{info.get('repo', '')}@{info.get('commit') or '-'};sha256={info.get('sha256')}"
        kw = json.dumps(self.params.model_kwargs, sort_keys=True) if self.params.model_kwargs else ""
        return (f"transformers/{self.model_name.partition('@')[0]};weights={w};pool={self.pool_type};"
                f"size={self.max_input_size};kwargs={kw};transformers={self._version}")

    def extra_repr(self) -> str:
        return f"identity={self.identity()!r}"
