"""The shipped recipes (configs/methods/*.yaml): each resolves into a checked run config and
builds its method, as `cxrcl pretrain NAME --config configs/methods/NAME.yaml` does."""

from pathlib import Path

import pytest

from cxrcl.errors import CxrclError
from cxrcl.methods.registry import METHODS, build_method
from cxrcl.training.run_config import resolve_run_config

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs" / "methods").glob("*.yaml"))


def test_every_method_has_a_recipe():
    assert sorted(p.stem for p in RECIPES) == sorted(METHODS)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_resolves_and_builds(recipe, tiny_ds):
    run = resolve_run_config(recipe.stem, tiny_ds, image_size=32, config_file=recipe)
    model = build_method(run.method, run.backbone, run.image_size, base=run.method_config)
    assert model.name == recipe.stem


def test_sparsecontrast_recipe_on_a_cnn_names_the_fix(tiny_ds):
    """The recipe's ViT setting (fuse=area) refuses a CNN in one line that says what to set;
    the spec's overrides win over the recipe's, so the fix it names works."""
    recipe = next(p for p in RECIPES if p.stem == "sparsecontrast")
    run = resolve_run_config("sparsecontrast", tiny_ds, backbone="resnet18", image_size=32, config_file=recipe)
    with pytest.raises(CxrclError, match="set fuse=none for a CNN"):
        build_method(run.method, run.backbone, run.image_size, base=run.method_config)
    run = resolve_run_config("sparsecontrast:fuse=none:prune_at=1", tiny_ds, backbone="resnet18",
                             image_size=32, config_file=recipe)
    assert (run.method_config["fuse"], run.method_config["prune_at"]) == ("none", 1)
    build_method("sparsecontrast", run.backbone, run.image_size, base=run.method_config)
