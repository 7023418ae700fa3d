"""Help that reads like a tool: plain metavars (``PATH``, ``N``, ``KEY=VALUE``; none for flags), no Python type
names or number ranges in the option table, a plain usage line, and an example section under every command.

Applied once to the click command tree that ``stmm`` runs (:func:`plain_help`), so the commands' own modules keep
declaring options as usual; a metavar set explicitly on an option is kept.
"""

from __future__ import annotations

from typing import Any

#: Metavars by option name (the long flag without dashes); other options get one from their type.
METAVARS: dict[str, str] = {
    "data": "PATH", "output": "DIR", "n-domains": "K", "labels": "COLUMN", "seed": "N", "device": "DEVICE",
    "image": "FILE", "scale": "FACTOR", "coords": "FILE", "counts-layer": "LAYER", "set": "KEY=VALUE",
    "stage": "1|2", "nproc": "N", "recipe": "NAME", "encoder": "NAME", "gene": "NAME", "fuse": "NAME",
    "builder": "NAME", "graph": "NAME", "task": "NAME", "kind": "KIND", "revision": "REV", "license": "LICENCE",
    "pipelines": "NAME", "datasets": "NAME", "seeds": "N", "seed-start": "N", "work": "DIR", "part": "NAME",
    "folds": "NAME", "label": "COLUMN",
}

_BY_TYPE = {int: "N", float: "NUMBER", str: "TEXT"}

#: One or two example lines per command, shown under its options.
EXAMPLES: dict[str, str] = {
    "stmm": "stmm demo                                       # a few minutes on the bundled DLPFC sample\n"
            "stmm run stereomm-expression --data outs/ -o run/ -k auto\n"
            "stmm run stereomm --data outs/ --image he_fullres.tif --scale 1 -o run/ -k auto\n"
            "stmm list --kind recipe; stmm info stereomm",
    "plugins": "stmm plugins\nstmm plugins --json",
    "list": "stmm list                    # everything\nstmm list --kind recipe      # recipes only\n"
            "stmm list --pretrained       # published pathology encoders",
    "info": "stmm info stereomm           # a recipe: its components and settings\n"
            "stmm info vgae               # a component's parameters\nstmm info vgae --json        # JSON schema",
    "compose": "stmm compose --recipe stereomm -o spec.json\n"
               "stmm compose --recipe stereomm --encoder uni --set fusion.img_weight=0.3 -o spec.json",
    "fit": "stmm fit spec.json --data section.h5ad -o run/ -k 7\n"
           "stmm fit spec.json --data outs/ --image he.tif --scale 1 -o run/ -k auto",
    "run": "stmm run stereomm --data outs/ --image he.tif --scale 1 -o run/ -k auto\n"
           "stmm run stereomm-expression --data section.h5ad -o run/ --labels layer",
    "demo": "stmm demo -o stmm-demo/",
    "predict": "stmm predict magic-run/ --image he.tif --coords spots.csv -o predicted.h5ad",
    "evaluate": "stmm evaluate magic-run/ --data held_out.h5ad --json",
    "push": "HF_TOKEN=... stmm push run/ lab/dlpfc-stereomm",
    "pull": "stmm pull lab/dlpfc-stereomm@COMMIT -o pipeline/",
    "embed": "stmm embed pipeline/ --data section.h5ad -o embedded.h5ad",
    "magic": "stmm run magic --data A1.h5ad B1.h5ad C1.h5ad -o magic-run/",
    "benchmark": "stmm benchmark domains --pipelines 'stereomm*' --datasets dlpfc-151676 --seeds 3 -o out/\n"
                 "stmm benchmark report -o out/",
}


def _metavar(param: Any) -> str | None:
    """A plain metavar for *param*, ``""`` for a flag, ``None`` to leave it."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    desc = getattr(param, "type_descriptor", None)
    if getattr(desc, "is_choice", False) and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    longs = [o[2:] for o in getattr(param, "opts", []) if o.startswith("--")]
    text = str(getattr(param, "help", "") or "")
    if "output" in longs and ("JSON" in text or ".h5ad" in text) and "older" not in text:
        return "FILE"  # an output file, not a run folder
    for name in longs:
        if name in METAVARS:
            return METAVARS[name]
    if param.param_type_name == "argument":
        return (param.name or "ARG").upper()
    if desc is None:
        return None
    ann = desc.annotation
    if getattr(desc, "is_path", False):
        return "PATH"
    if getattr(desc, "is_list", False):
        args = getattr(ann, "__args__", ())
        inner = args[0] if args else str
        return "PATH" if getattr(inner, "__name__", "") in ("Path", "PosixPath") else _BY_TYPE.get(inner, "VALUE")
    return _BY_TYPE.get(ann, "VALUE")


def _plain_param(param: Any) -> None:
    if param.metavar is None or "[" in str(param.metavar) or "<" in str(param.metavar):
        mv = _metavar(param)
        if mv is not None:
            param.metavar = mv if param.param_type_name == "option" else (mv or None)
    param._get_number_range_help_str = lambda: None  # ranges are said in words in the help text
    if param.param_type_name == "option":
        param.display_type_rich = lambda ctx=None, p=param: p.metavar
    if param.param_type_name == "argument":
        param.display_type_rich = lambda ctx=None: None  # the name column already shows the metavar
        def usage(p=param) -> list[str]:
            if getattr(p, "hidden", False):
                return []
            name = p.metavar or (p.name or "ARG").upper()
            name = name if p.required else f"[{name}]"
            return [name + ("..." if p.nargs != 1 else "")]

        param.get_usage_pieces = lambda ctx, _u=usage: _u()


def plain_help(command: Any, name: str | None = "stmm") -> Any:
    """Apply plain metavars, usage and example epilogs to *command* and its sub-commands (in place)."""
    from rich.markup import escape

    for param in getattr(command, "params", []):
        _plain_param(param)
    original = getattr(command, "get_help_option", None)
    if original is not None and not getattr(original, "_stmm_plain", False):
        def help_option(ctx, _orig=original):
            opt = _orig(ctx)
            if opt is not None:
                opt.metavar = ""
                opt.display_type_rich = lambda ctx=None: ""
            return opt

        help_option._stmm_plain = True
        command.get_help_option = help_option
    if name in EXAMPLES and not getattr(command, "epilog", None):
        body = "\n".join(f"  {ln}" for ln in EXAMPLES[name].splitlines())
        command.epilog = escape(f"Examples:\n{body}")
    for sub_name, sub in (getattr(command, "commands", None) or {}).items():
        plain_help(sub, sub_name)
    return command
