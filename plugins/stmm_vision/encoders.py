"""timm image encoders: histology tiles → one feature vector per tile (and patch tokens for ViTs).

What changed from StereoMM's image features (``seeds-spec.md`` A1):

* batched inference under :func:`torch.inference_mode` with channels-last memory (published: one tile at a time);
* any timm model, not only ResNet-50; features are the model's own pooled features (``num_classes=0``), i.e.
  the 2048-d global average pool for ResNet-50, exactly StereoMM's ``children()[:-1]`` output;
* normalisation (mean/std), input size and interpolation come from the model's own pretrained config
  (``timm.data.resolve_model_data_config``), never guessed (Magic normalised DeiT weights with CLIP statistics);
* weights are safetensors only, resolved through the Hugging Face Hub cache, loaded strictly and identified by
  sha256 + commit; an unreachable Hub is a fast :class:`~stmm_core.errors.WeightsUnavailable`, never a silent
  fallback to random weights;
* tiles are uint8 RGB (the tiler converts RGBA/greyscale), so the published RGBA crash cannot happen.

Input size (``params.input_size``):

* ``"auto"``: ``preprocessing.input_size`` (= :attr:`TimmImageEncoder.max_input_size`) is the model's pretrained
  size; the pipeline cuts tiles at their native resolution clamped to it. Flexible models (CNNs) are fed the tile
  at the size given (clamped to ``[min_input_size, max_input_size]``); fixed-size models (ViTs) always get
  their pretrained size (tiles are resized).
* an int: the network is built (fixed-size models: ``img_size=``, position embeddings resampled) and fed at that
  size; tiles of another size are resized.

Resizing uses the pretrained config's interpolation (bicubic / bilinear) with antialiasing when downsampling.
The pooled features ignore the pretrained config's ``crop_pct``: a tile is already the region of interest.

Reproducibility of ``weights="random"``: the pipeline seeds torch (``torch.manual_seed(seed)``) right before
building the encoder; :meth:`identity` records ``torch.initial_seed()`` at build time *and* a sha256 digest of the
initialised parameters, so the feature cache is keyed on the actual weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stmm_core.compat import import_timm
from stmm_core.errors import DataError, SpecError, WeightsUnavailable
from stmm_core.interfaces import ImageEncoder, ImagePreprocessing
from stmm_vision.tile_input import check_tiles

from .params import TimmEncoderParams

#: Seconds allowed to reach the Hub before weights are declared unavailable (env ``STMM_HUB_TIMEOUT``).
DEFAULT_HUB_TIMEOUT = 5.0
#: Smallest tile side fed to a flexible-size model (5 stride-2 stages of a ResNet → 1×1 map).
DEFAULT_MIN_INPUT_SIZE = 32
_WEIGHTS_FILE = "model.safetensors"
_HEX40 = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "on", "yes", "true", "y"}


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face Hub access: fast failure, cache first, safetensors only
# ---------------------------------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    """HF offline mode, read at call time (huggingface_hub reads its env vars only once, at import)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return True


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _hub_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("STMM_HUB_TIMEOUT", DEFAULT_HUB_TIMEOUT)))
    except ValueError:
        return DEFAULT_HUB_TIMEOUT


def _probe(endpoint: str, timeout: float) -> str | None:
    """None when a TCP connection to the Hub (or the configured proxy) opens within *timeout*, else why not.

    huggingface_hub retries a failed connection 5 times with back-off (~25 s); this one probe fails in
    milliseconds (DNS error, refused) or at most *timeout* seconds.
    """
    url = urllib.parse.urlsplit(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme) or urllib.request.getproxies().get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or 8080
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"cannot reach {endpoint}: {reason}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first if len(first) <= 160 else first[:157] + "..."


def _unavailable(model: str, reason: str) -> WeightsUnavailable:
    return WeightsUnavailable(
        f"pretrained weights for {model} could not be downloaded ({reason}); set HF_TOKEN / check the network "
        "(and HF_HUB_OFFLINE), point weights to a local .safetensors file "
        "(--set image.weights=/path/model.safetensors), "
        "or pass --set image.weights=random to use random initialisation explicitly"
    )


def _hub_download(model: str, repo_id: str, filename: str, revision: str | None, *,
                  missing_ok: bool = False) -> str | None:
    """Path of *filename* from the Hub cache, downloading it when needed and possible.

    Offline (``HF_HUB_OFFLINE``) or when the Hub cannot be reached quickly, only the local cache is used.
    Every failure becomes :class:`WeightsUnavailable` with a one-line reason; with *missing_ok* a file that the
    repository (or, offline, the cache) does not have gives None instead.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors

    local_only = _hub_offline()
    why_local = "HF_HUB_OFFLINE is set and they are not in the local cache"
    endpoint = _hub_endpoint()
    if not local_only:
        unreachable = _probe(endpoint, _hub_timeout())
        if unreachable is not None:
            local_only, why_local = True, f"{unreachable}; not in the local cache either"
    try:
        return hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            local_files_only=local_only,
            etag_timeout=_hub_timeout(),
            endpoint=None if local_only else endpoint,
        )
    except hf_errors.LocalEntryNotFoundError as exc:
        if missing_ok and local_only:
            return None
        raise _unavailable(model, why_local if local_only else _short(exc)) from None
    except hf_errors.GatedRepoError:
        raise _unavailable(
            model, f"{repo_id} is gated: accept its licence on the Hub and set HF_TOKEN to a token that has access"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise _unavailable(model, f"revision {revision!r} of {repo_id} does not exist") from None
    except hf_errors.RepositoryNotFoundError:
        raise _unavailable(model, f"repository {repo_id} not found (or private: set HF_TOKEN)") from None
    except hf_errors.RemoteEntryNotFoundError:
        if missing_ok:
            return None
        raise _unavailable(
            model, f"{repo_id} has no {filename} (stmm loads safetensors weights only, never pickled checkpoints)"
        ) from None
    except Exception as exc:  # network errors, HTTP errors, disk errors
        raise _unavailable(model, f"{type(exc).__name__}: {_short(exc)}") from None


def _commit_of(path: str) -> str | None:
    """The commit hash of a file in the HF cache (``.../snapshots/<commit>/<file>``)."""
    name = Path(path).parent.name
    return name if _HEX40.fullmatch(name) else None


def _sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _state_digest(module: nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of *module*'s state dict (sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    return h.hexdigest()


def _pool_name(model: nn.Module) -> str | None:
    gp = getattr(model, "global_pool", None)
    gp = gp if isinstance(gp, str) else getattr(gp, "pool_type", None)
    return gp if isinstance(gp, str) and gp else None


def _drop_classifier(model: nn.Module) -> None:
    """``reset_classifier(0)`` keeping the pooling the model was built with (ResNets reset it to avg)."""
    pool = _pool_name(model)
    try:
        model.reset_classifier(0, pool) if pool is not None else model.reset_classifier(0)
    except TypeError:  # pragma: no cover - models whose reset_classifier takes no pooling argument
        model.reset_classifier(0)


# ---------------------------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------------------------


class TimmImageEncoder(nn.Module, ImageEncoder):
    """A frozen timm model: uint8 tiles ``(B, 3, H, W)`` → float32 pooled features ``(B, out_dim)``.

    Attributes:
        model: the timm model (classifier removed, eval mode).
        out_dim: feature width (``model.num_features``).
        preprocessing: input size, mean, std and interpolation from the model's pretrained config.
        max_input_size: the model's pretrained input size (or the explicit ``input_size``).
        min_input_size: smallest side fed to a flexible-size model.
        fixed_input_size: True for models that only take one size (ViTs); they always get ``max_input_size``.
        num_prefix_tokens: class/register tokens at the start of :meth:`encode_tokens` (0 for CNNs).
        weights_info: how the weights were obtained (source, commit, sha256, seed), JSON-able.
    """

    def __init__(self, params: TimmEncoderParams | None = None) -> None:
        nn.Module.__init__(self)
        params = params if params is not None else TimmEncoderParams()
        ImageEncoder.__init__(self, params)
        timm = import_timm()
        self._timm_version = timm.__version__
        self._digest: str | None = None
        self.weights_info: dict[str, Any] = {}

        from .layer_args import resolve_layer_kwargs

        kwargs: dict[str, Any] = resolve_layer_kwargs(dict(params.model_kwargs))
        if params.pool not in ("default", "cls+mean"):
            kwargs["global_pool"] = "token" if params.pool == "cls" else params.pool

        name = params.model.strip()
        weights = params.weights
        source, _, ident = name.partition(":") if name.startswith(("hf-hub:", "local-dir:")) else ("", "", name)

        # 1. Where the architecture (+ its pretrained config) comes from.
        hub_repo: str | None = None  # set when the weights sit in a Hub snapshot next to config.json
        if source == "hf-hub":
            repo_id, _, revision = ident.partition("@")
            cfg_path = _hub_download(name, repo_id, "config.json", revision or None)
            arch_dir: str | None = str(Path(cfg_path).parent)
            hub_repo = repo_id
            self.weights_info.update(repo=repo_id, commit=_commit_of(cfg_path))
            create_name = f"local-dir:{arch_dir}"
            cfg = self._dir_cfg(arch_dir)
        elif source == "local-dir":
            arch_dir = str(Path(ident).expanduser())
            create_name = f"local-dir:{arch_dir}"
            cfg = self._dir_cfg(arch_dir)
        else:
            arch_dir = None
            create_name = name
            cfg = self._registry_cfg(timm, name)

        if isinstance(weights, str) and weights.startswith("local-dir:"):
            wdir = str(Path(weights.partition(":")[2]).expanduser())
            wcfg = self._dir_cfg(wdir)
            if wcfg.get("architecture") != cfg.get("architecture"):
                raise SpecError(
                    f"weights {weights} hold a {wcfg.get('architecture')} but image.model is {name}; "
                    f"set --set image.model={weights}"
                )
            create_name, arch_dir, cfg, hub_repo = f"local-dir:{wdir}", wdir, wcfg, None
            self.weights_info = {}
            weights = "pretrained"

        # 2. Fixed-size models built at an explicit input size.
        native = int(cfg.get("input_size", (3, 224, 224))[-1])
        fixed = bool(cfg.get("fixed_input_size", False))
        if isinstance(params.input_size, int) and fixed and params.input_size != native:
            kwargs["img_size"] = params.input_size

        # 3. Weights.
        if weights == "random":
            seed = int(torch.initial_seed())
            model = self._create(timm, create_name, False, kwargs)
            self.weights_info.update(source="random", seed=seed)
        elif weights == "pretrained":
            if arch_dir is not None:  # hf-hub snapshot or local folder: weights sit next to config.json
                if hub_repo is not None:
                    wfile = Path(_hub_download(name, hub_repo, _WEIGHTS_FILE, self.weights_info.get("commit")))
                else:
                    wfile = Path(arch_dir).expanduser() / _WEIGHTS_FILE
                if not wfile.is_file():
                    raise WeightsUnavailable(
                        f"{arch_dir} has no {_WEIGHTS_FILE} (stmm loads safetensors only); save the model with "
                        "timm.models.save_for_hf(model, dir, safe_serialization=True) or pass a .safetensors file"
                    )
                self._check_sha(wfile)
                model = self._create(timm, create_name, True, kwargs)
                self.weights_info["source"] = "hf-hub" if hub_repo is not None else "local-dir"
            else:
                hub_id = cfg.get("hf_hub_id")
                if not hub_id:
                    url = cfg.get("url")
                    why = (f"only a pickled checkpoint is published ({url}); convert it to safetensors"
                           if url else "timm publishes no pretrained weights for it")
                    raise WeightsUnavailable(
                        f"pretrained weights for {name} are not available ({why}); point weights to a local "
                        ".safetensors file or pass --set image.weights=random to use random initialisation explicitly"
                    )
                repo_id, _, revision = hub_id.partition("@")
                fname = cfg.get("hf_hub_filename") or _WEIGHTS_FILE
                if not fname.endswith(".safetensors"):
                    fname = _WEIGHTS_FILE
                wfile = Path(_hub_download(name, repo_id, fname, revision or None))
                self.weights_info.update(source="hf-hub", repo=repo_id, commit=_commit_of(str(wfile)), file=fname)
                self._check_sha(wfile)
                model = self._create(timm, create_name, True, kwargs, overlay={"file": str(wfile)})
            self.weights_info["sha256"] = self._file_sha
        else:  # a local .safetensors file
            path = Path(weights).expanduser()
            if path.suffix != ".safetensors":
                raise SpecError(
                    f"image.weights={weights!r}: expected 'pretrained', 'random', a .safetensors file or "
                    "local-dir:/path (pickled .pth/.bin checkpoints are not loaded; convert them to safetensors)"
                )
            if not path.is_file():
                raise WeightsUnavailable(f"weights file {path} does not exist; check the path")
            self._check_sha(path)
            model = self._create(timm, create_name, False, kwargs)
            self._load_file_strict(model, path, name)
            self.weights_info.update(source="file", sha256=self._file_sha)

        # 4. Pooled features only; frozen; eval.
        if getattr(model, "num_classes", 0):
            _drop_classifier(model)
        model.eval()
        model.requires_grad_(False)
        if params.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.model_name = getattr(model, "pretrained_cfg", {}).get("architecture") or name
        self.out_dim = int(model.num_features) * (2 if params.pool == "cls+mean" else 1)

        from timm.data import resolve_model_data_config

        dc = resolve_model_data_config(model)
        pretrained_size = int(dc["input_size"][-1])
        self.fixed_input_size = bool(model.pretrained_cfg.get("fixed_input_size", False)) or fixed
        self.max_input_size = int(params.input_size) if isinstance(params.input_size, int) else pretrained_size
        min_cfg = model.pretrained_cfg.get("min_input_size")
        self.min_input_size = int(min_cfg[-1]) if min_cfg else min(DEFAULT_MIN_INPUT_SIZE, self.max_input_size)
        interp = str(dc.get("interpolation", "bilinear"))
        self.preprocessing = ImagePreprocessing(
            input_size=self.max_input_size,
            mean=tuple(float(v) for v in dc["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in dc["std"]),  # type: ignore[arg-type]
            interpolation=interp,
        )
        self._mode = interp if interp in ("bilinear", "bicubic", "nearest") else "bicubic"
        self.register_buffer("_mean", torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.preprocessing.std).view(1, 3, 1, 1), persistent=False)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        #: The pooling actually used (``avg`` for ResNets, ``token`` for class-token ViTs, ``cls+mean``...).
        self.pool_type: str = "cls+mean" if params.pool == "cls+mean" else (_pool_name(model) or params.pool)
        if self.pool_type == "cls+mean" and not self.num_prefix_tokens:
            raise SpecError(f"image.pool=cls+mean needs a model with a class token; {name} has none")

    # -- construction helpers ------------------------------------------------------------------------------------

    _file_sha: str | None = None

    @staticmethod
    def _registry_cfg(timm: Any, name: str) -> dict[str, Any]:
        from timm.models import get_pretrained_cfg, split_model_name_tag

        arch, _ = split_model_name_tag(name)
        if not timm.is_model(arch):
            import difflib

            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SpecError(f"unknown timm model {name!r}{hint}; list them with python -c \"import timm; "
                            "print(timm.list_models('*resnet*'))\" or use hf-hub:org/name@revision")
        cfg = get_pretrained_cfg(name)
        out = cfg.to_dict() if cfg is not None else {}
        out["architecture"] = arch
        return out

    @staticmethod
    def _dir_cfg(path: str) -> dict[str, Any]:
        cfg_file = Path(path).expanduser() / "config.json"
        if not cfg_file.is_file():
            raise WeightsUnavailable(f"{cfg_file} not found; local-dir: needs a timm save_for_hf folder")
        try:
            raw = json.loads(cfg_file.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {cfg_file} ({_short(exc)}); re-save it with timm.models.save_for_hf")
        pcfg = dict(raw.get("pretrained_cfg", raw))
        pcfg.setdefault("architecture", raw.get("architecture"))
        img_size = (raw.get("model_args") or {}).get("img_size")
        if img_size is not None and pcfg.get("fixed_input_size"):
            size = img_size if isinstance(img_size, int) else img_size[-1]
            pcfg["input_size"] = (3, size, size)
        return pcfg

    def _check_sha(self, path: Path) -> None:
        sha = _sha256_file(path)
        expected = self.params.sha256
        if expected and sha != expected:
            raise WeightsUnavailable(
                f"weights file {path} has sha256 {sha}, expected {expected}: it is corrupted or a different version; "
                "replace the file (delete a Hub-cached one to re-download it) or update image.sha256"
            )
        self._file_sha = sha

    @staticmethod
    def _create(timm: Any, name: str, pretrained: bool, kwargs: dict[str, Any],
                overlay: dict[str, Any] | None = None) -> nn.Module:
        try:
            if overlay:
                return timm.create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)
            return timm.create_model(name, pretrained=pretrained, **kwargs)
        except TypeError as exc:
            raise SpecError(f"timm model {name} does not accept {sorted(kwargs)} ({_short(exc)}); "
                            "leave image.input_size=auto / image.pool=default") from None
        except RuntimeError as exc:
            if pretrained and ("size mismatch" in str(exc) or "state_dict" in str(exc)):
                raise WeightsUnavailable(f"the weights for {name} do not fit the model ({_short(exc)})") from None
            raise
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise SpecError(
                f"cannot build timm model {name} ({type(exc).__name__}: {_short(exc)}); hf-hub:/local-dir: must "
                "hold a timm model (config.json with 'architecture', as written by timm.models.save_for_hf)"
            ) from None

    @staticmethod
    def _load_file_strict(model: nn.Module, path: Path, name: str) -> None:
        """Load a timm-format safetensors state dict strictly (the classifier may be present or absent)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsUnavailable(f"cannot read weights file {path} ({_short(exc)}); is it a safetensors file?")
        sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
        classifier = model.pretrained_cfg.get("classifier") or ()
        classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        head_keys = {k for k in sd for c in classifier if k.startswith(c + ".")}
        model_sd = model.state_dict()
        head_fits = head_keys and all(k in model_sd and model_sd[k].shape == sd[k].shape for k in head_keys)
        if not head_fits:
            for k in head_keys:
                sd.pop(k)
            if getattr(model, "num_classes", 0):
                _drop_classifier(model)
        model_keys = set(model.state_dict())
        missing = sorted(model_keys - set(sd))
        unexpected = sorted(set(sd) - model_keys)
        bad_shape = sorted(k for k in model_keys & set(sd) if model.state_dict()[k].shape != sd[k].shape)
        if missing or unexpected or bad_shape:
            parts = []
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
                if keys:
                    parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
            raise WeightsUnavailable(
                f"weights file {path} does not match timm model {name}: {'; '.join(parts)}; "
                "set image.model to the architecture the file was saved from"
            )
        model.load_state_dict(sd, strict=True)

    # -- encoding ------------------------------------------------------------------------------------------------

    def _side(self, h: int, w: int) -> int:
        if isinstance(self.params.input_size, int) or self.fixed_input_size:
            return self.max_input_size
        side = int(min(max(max(h, w), self.min_input_size), self.max_input_size))
        # flexible-size ViTs (dynamic_img_size) need a whole number of patches: nearest multiple of the patch size
        patch = getattr(getattr(self.model, "patch_embed", None), "patch_size", None)
        patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch or 1)
        return max(patch, int(round(side / patch)) * patch) if patch > 1 else side

    def _prepare(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → normalised float32 on the model's device, resized when needed."""
        side = self._side(int(tiles.shape[-2]), int(tiles.shape[-1]))
        x = tiles.to(self._mean.device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (side, side):
            down = side < max(x.shape[-2:])
            if self._mode == "nearest":
                x = F.interpolate(x, size=(side, side), mode="nearest")
            else:
                x = F.interpolate(x, size=(side, side), mode=self._mode, align_corners=False, antialias=down)
                if self._mode == "bicubic":
                    x = x.clamp_(0.0, 1.0)
        x = (x - self._mean) / self._std
        if self.params.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → float32 ``(B, out_dim)`` on the model's device."""
        tiles = check_tiles(tiles)
        if tiles.shape[0] == 0:
            return torch.empty(0, self.out_dim, dtype=torch.float32, device=self._mean.device)
        if self.pool_type == "cls+mean":  # class token ++ mean of the patch tokens (class/register tokens excluded)
            t = self.encode_tokens(tiles)
            return torch.cat([t[:, 0], t[:, self.num_prefix_tokens:].mean(1)], dim=-1)
        self.model.eval()
        bs = int(self.params.batch_size)
        with torch.inference_mode():
            out = [self.model(self._prepare(tiles[i : i + bs])).float() for i in range(0, tiles.shape[0], bs)]
        return torch.cat(out) if len(out) > 1 else out[0]

    def encode_tokens(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → float32 tokens ``(B, T, D)`` from ``forward_features``.

        ViTs: the class/register tokens (:attr:`num_prefix_tokens` of them) followed by the patch tokens, after
        the final norm. CNNs: the last feature map flattened row-major to ``(B, h·w, C)``.
        """
        tiles = check_tiles(tiles)
        self.model.eval()
        bs = int(self.params.batch_size)
        outs = []
        with torch.inference_mode():
            for i in range(0, tiles.shape[0], bs):
                t = self.model.forward_features(self._prepare(tiles[i : i + bs]))
                if isinstance(t, (tuple, list)):
                    t = t[0]
                if t.ndim == 4:  # (B, C, h, w) → (B, h·w, C)
                    t = t.flatten(2).transpose(1, 2)
                outs.append(t.float().contiguous())
        return torch.cat(outs)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:  # nn.Module protocol
        return self.encode(tiles)

    # -- identity ------------------------------------------------------------------------------------------------

    def identity(self) -> str:
        """A canonical string that changes whenever the weights (or the way tiles are fed) change.

        ``timm/<arch>;weights=<source>;sha256=<digest>;pool=..;size=..;timm=<version>`` where the digest is the
        weights file's sha256 (pretrained / local file; hub weights also record ``repo@commit``) or, for random
        weights, ``seed=<torch.initial_seed() at build>`` plus a digest of the initialised parameters.
        """
        info = self.weights_info
        src = info.get("source", "?")
        if src == "random":
            if self._digest is None:
                self._digest = _state_digest(self.model)
            w = f"random(seed={info.get('seed')});params-sha256={self._digest[:32]}"
        elif src == "hf-hub":
            w = f"hf-hub:{info.get('repo')}@{info.get('commit') or 'unknown'};sha256={info.get('sha256')}"
        else:
            w = f"{src};sha256={info.get('sha256')}"
        size = self.params.input_size if isinstance(self.params.input_size, int) else "auto"
        kw = f"kwargs={json.dumps(self.params.model_kwargs, sort_keys=True)};" if self.params.model_kwargs else ""
        return (f"timm/{self.model_name};weights={w};pool={self.pool_type};size={size}/{self.max_input_size};"
                f"{kw}timm={self._timm_version}")

    def extra_repr(self) -> str:
        return f"identity={self.identity()!r}"
