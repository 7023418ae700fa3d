"""``stmm compose`` starts from a recipe and keeps its tuned settings; components without a recipe are marked as
not a tuned recipe; a composition equal to a recipe's components with other settings is reported; published
encoders are named directly; ``stmm list --kind recipe`` and an unmatched ``stmm list`` pattern."""

from __future__ import annotations

import json

from conftest import run_stmm

from stmm_core.composing import compose_spec, recipe_mismatch, zoo_image_component


def test_recipe_components_named_again_keep_the_tuned_settings():
    base = compose_spec("stereomm")
    same = compose_spec("stereomm", {"image": "resnet50", "gene": "hvg", "fusion": "attention", "graph": "vgae"})
    assert same.hash() == base.hash() and same.recipe == "stereomm" and same.note is None
    assert same.components["fusion"].params["img_weight"] == "auto"


def test_components_without_recipe_warn_and_say_not_tuned():
    lines: list[str] = []
    spec = compose_spec(None, {"image": "resnet50", "gene": "hvg", "fusion": "attention", "graph": "vgae"},
                        warn=lines.append)
    assert spec.recipe is None and "not a tuned recipe" in spec.note
    assert len(lines) == 1 and "recipe 'stereomm'" in lines[0] and "img_weight" in lines[0], lines
    assert "--recipe stereomm" in lines[0]
    assert recipe_mismatch(compose_spec("stereomm")) is None
    # other components: nothing to warn about
    lines.clear()
    compose_spec(None, {"image": "stain-stats", "task": "kmeans"}, warn=lines.append)
    assert lines == []


def test_replacing_a_component_keeps_the_rest_and_notes_it():
    spec = compose_spec("stereomm", {"image": "uni"})
    img = spec.components["image"]
    assert img.name == "timm" and img.params["model"] == "hf-hub:MahmoodLab/UNI"
    assert img.params["model_kwargs"] == {"init_values": 1e-05, "dynamic_img_size": True}
    assert spec.components["gene"].params["n_top_genes"] == 3000  # the recipe's tuned gene settings stay
    assert spec.recipe is None and "based on recipe stereomm" in spec.note and "uni" in spec.note
    # the note is not part of the hash; specs without a note serialise as before
    assert "note" not in compose_spec("stereomm").to_dict()
    assert zoo_image_component("virchow2")["params"]["pool"] == "cls+mean"
    assert zoo_image_component("phikon")["name"] == "transformers"
    assert zoo_image_component("not-in-the-zoo") is None


def test_compose_cli(tmp_path):
    r = run_stmm(["compose", "--recipe", "stereomm", "--encoder", "uni", "-o", str(tmp_path / "s.json")])
    assert r.returncode == 0, r.stderr
    spec = json.loads((tmp_path / "s.json").read_text())
    assert spec["components"]["image"]["params"]["model"] == "hf-hub:MahmoodLab/UNI" and "note" in spec
    r = run_stmm(["compose", "--encoder", "resnet50", "--gene", "hvg", "--fuse", "attention", "--graph", "vgae",
                  "--dry-run"])
    assert r.returncode == 0 and "stmm: warning: these are the components of recipe 'stereomm'" in r.stderr
    r = run_stmm(["compose", "--image", "resnet50"])  # the old flag: one line naming the new one
    assert r.returncode == 2 and "--encoder" in r.stderr and "Traceback" not in r.stderr
    r = run_stmm(["compose"])
    assert r.returncode == 2 and "--recipe" in r.stderr


def test_list_recipes_and_no_match():
    r = run_stmm(["list", "--kind", "recipe"])
    assert r.returncode == 0, r.stderr
    rows = r.stdout.strip().splitlines()
    assert rows and all(ln.startswith("recipe") for ln in rows) and any(" stereomm " in ln for ln in rows)
    r = run_stmm(["list", "nosuch"])
    assert r.returncode == 2 and "nosuch" in r.stderr


def test_run_swaps_the_encoder(tmp_path, capsys):
    from stmm_core.cli.main import main

    code = main(["run", "stereomm", "--encoder", "uni", "--data", str(tmp_path / "missing.h5ad"),
                 "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "based on recipe stereomm with image=uni" in err and "not found" in err
