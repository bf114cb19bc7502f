"""base: inheritance, --set overrides and the resolved recipe `ganstack check` prints."""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import ROOT, TINY, write


def test_check_prints_every_default(cli) -> None:
    code, out, _ = cli("check", TINY)
    assert code == 0
    data = yaml.safe_load(out)
    assert data["training"]["optimizer"]["generator"] == {"lr": 0.0002, "betas": [0.5, 0.999], "weight_decay": 0.0}
    assert data["stages"][0]["generator"] == {"type": "stackgan-stage1", "ngf": 8, "out_size": 16}
    assert data["stages"][0]["losses"][1] == {"type": "kl", "coeff": 2.0}
    assert data["schema_version"] == 1


def test_base_merges_and_lists_replace(cli, tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", TINY.read_text())
    child = write(tmp_path / "child.yaml", "base: base.yaml\nname: child\ntraining: {batch_size: 4}\n"
                  "stages:\n  - generator: {type: stackgan-stage1, ngf: 8, out_size: 16}\n"
                  "    discriminator: {type: matching-aware, ndf: 4}\n")
    code, out, _ = cli("check", child)
    assert code == 0
    data = yaml.safe_load(out)
    assert data["name"] == "child"
    assert data["training"]["batch_size"] == 4 and data["training"]["epochs"] == 1  # merged
    assert len(data["stages"]) == 1  # a list replaces a list
    assert data["stages"][0]["conditioner"] == {"type": "ca", "condition_dim": 128, "activation": "relu",
                                                  "init": "normal"}


def test_set_overrides_with_yaml_types_and_indices(cli) -> None:
    code, out, _ = cli("check", TINY, "--set", "stages.1.discriminator.ndf=32", "--set",
                       "training.optimizer.generator.betas=[0.0, 0.9]", "--set", "training.schedule=joint")
    assert code == 0
    data = yaml.safe_load(out)
    assert data["stages"][1]["discriminator"]["ndf"] == 32
    assert data["training"]["optimizer"]["generator"]["betas"] == [0.0, 0.9]
    assert data["training"]["schedule"] == "joint"


def test_set_type_replaces_the_component_and_later_sets_fill_it(cli) -> None:
    code, out, err = cli("check", TINY, "--set", "stages.0.conditioner.type=identity",
                         "--set", "stages.1.conditioner.type=linear", "--set", "stages.1.conditioner.condition_dim=4",
                         "--set", "stages.1.discriminator.type=matching-aware")
    assert code == 0, err
    data = yaml.safe_load(out)
    assert data["stages"][0]["conditioner"] == {"type": "identity"}  # ca's condition_dim dropped
    assert data["stages"][1]["conditioner"] == {"type": "linear", "condition_dim": 4, "init": "normal"}
    assert data["stages"][1]["discriminator"]["ndf"] == 4  # same type: its options stay


def test_check_json(cli) -> None:
    import json

    code, out, _ = cli("check", TINY, "--json")
    assert code == 0 and json.loads(out)["name"] == "tiny_shapes"


def test_a_shipped_recipe_by_name_from_any_folder(cli, tmp_path: Path) -> None:
    import json

    for name in ("shapes_quickstart", "shapes_quickstart.yaml", "ablations/stage1_only"):
        code, out, err = cli("check", name, "--json")
        assert code == 0, (name, err)
    assert json.loads(cli("check", "shapes_ca", "--json")[1])["name"] == "shapes_ca"
    mine = write(tmp_path / "elsewhere" / "mine.yaml", "base: shapes_quickstart.yaml\ntraining: {batch_size: 5}\n")
    data = json.loads(cli("check", mine, "--json")[1])
    assert data["training"]["batch_size"] == 5 and data["stages"][0]["name"] == "stage-I"
    # A file of that name next to the recipe, or in the working folder, comes first.
    write(tmp_path / "elsewhere" / "shapes_quickstart.yaml", (ROOT / "recipes" / "shapes_quickstart.yaml").read_text()
          .replace("batch_size: 64", "batch_size: 7"))
    mine = write(tmp_path / "elsewhere" / "mine.yaml", "base: shapes_quickstart.yaml\n")
    assert json.loads(cli("check", mine, "--json")[1])["training"]["batch_size"] == 7
    code, _out, err = cli("check", "no_such_recipe")
    message = " ".join(err.split())
    assert code == 2 and "recipe file not found" in message and "`ganstack recipes` lists them" in message


def test_recipes_lists_every_shipped_recipe_with_one_line(cli) -> None:
    code, out, err = cli("recipes")
    assert code == 0, err
    shipped = sorted(p.relative_to(ROOT / "recipes").with_suffix("").as_posix()
                     for p in (ROOT / "recipes").rglob("*.yaml"))
    for name in shipped:
        assert name in out
    assert "two-stage StackGAN on synthetic shapes" in " ".join(out.split())
