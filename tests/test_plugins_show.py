"""A plugin author's and a recipe writer's view of one component: `ganstack plugins show NAME`."""

from __future__ import annotations

import json

import attrs

import ganstack
from ganstack.components.loader import load_plugins
from ganstack.hookspecs import hookimpl
from ganstack.testing import registered_plugin
from ganstack_defaults.networks.conditioners import CAOptions


def test_show_prints_every_option_of_ca_with_its_type_default_and_doc(cli) -> None:
    code, out, err = cli("plugins", "show", "ca")
    assert code == 0, err
    assert out.startswith("conditioner 'ca'\n")
    assert "  plugin:        stackgan\n" in out and f"  distribution:  ganstack {ganstack.__version__}\n" in out
    assert "Conditioning Augmentation" in out.split("\n")[1]
    for field in attrs.fields(CAOptions):
        block = out.split(f"\n    {field.name}\n", 1)[1].split("\n    doc:", 1)[0]
        assert f"      default:  {field.default}" in block
        doc = " ".join(field.metadata["doc"].split())
        assert f"      doc:      {doc}\n" in out
    assert "      type:     one of: relu, leaky_relu, glu\n" in out
    assert "      type:     int\n      default:  128\n      checks:   >= 1\n" in out
    assert "Literal" not in out and "typing" not in out


def test_every_default_option_reads_in_words(cli) -> None:
    for entry in load_plugins().registry.entries():
        if entry.distribution != "ganstack":
            continue
        code, out, err = cli("plugins", "show", f"{entry.kind}:{entry.name}", "--json")
        assert code == 0, err
        (shown,) = json.loads(out)
        assert (shown["kind"], shown["plugin"], shown["summary"]) == (entry.kind, entry.plugin, entry.summary)
        assert [o["name"] for o in shown["options"]] == [f.name for f in attrs.fields(entry.options)]
        for option in shown["options"]:
            where = (entry.name, option["name"])
            assert option["doc"], where
            assert not any(s in option["type"] for s in ("[", "typing", "Literal", "NoneType", "|")), where
            assert option["default"], where


def test_show_words_for_validators_optionals_and_lists(cli) -> None:
    bow = {o["name"]: o for o in json.loads(cli("plugins", "show", "bow", "--json")[1])[0]["options"]}
    assert bow["ngrams"]["checks"] == [">= 1", "<= 4"] and bow["ngrams"]["type"] == "int"
    assert bow["word_dim"]["type"] == "int or none" and bow["word_dim"]["default"] == "null"
    assert bow["trainable"]["type"] == "true or false" and bow["trainable"]["default"] == "true"
    refiner = {o["name"]: o for o in json.loads(cli("plugins", "show", "stackgan-refiner", "--json")[1])[0]["options"]}
    assert refiner["scale"]["checks"] == ["a power of two, at least 2"]
    assert refiner["input"]["type"] == "one of: image, features"
    loss = {o["name"]: o for o in json.loads(cli("plugins", "show", "kl", "--json")[1])[0]["options"]}
    assert loss["coeff"] == {**loss["coeff"], "type": "float", "default": "2.0", "checks": [">= 0"]}


def test_show_takes_kind_or_plugin_to_choose_and_names_what_exists(cli) -> None:
    code, out, _err = cli("plugins", "show", "matching-aware")
    assert code == 0 and "discriminator 'matching-aware'" in out and "loss 'matching-aware'" in out
    code, out, _err = cli("plugins", "show", "loss:matching-aware")
    assert code == 0 and out.startswith("loss 'matching-aware'") and "discriminator" not in out.split("\n")[0]
    code, out, _err = cli("plugins", "show", "losses:matching-aware")
    assert code == 0 and out.count("'matching-aware'\n") == 1 and "  plugin:        losses" in out
    code, _out, err = cli("plugins", "show", "cca")
    message = " ".join(err.split())
    assert code == 2 and "no component 'cca' is registered (did you mean 'ca'?)" in message
    assert "`ganstack plugins` lists every component" in message and "Traceback" not in err


@attrs.define(frozen=True)
class _NoisyOptions:
    sigma: float = attrs.field(default=0.1, validator=attrs.validators.gt(0), metadata={"doc": "noise [std]"})


class _Bracketed:
    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        register("loss", "bracketed", lambda o, c: None, options=_NoisyOptions,
                 summary="adds [noise] to [c] and [bold]stays[/bold] plain")


def test_listing_and_show_keep_square_brackets(cli) -> None:
    with registered_plugin(_Bracketed(), "brackets"):
        code, out, err = cli("plugins")
        assert code == 0, err
        assert "adds [noise] to [c] and [bold]stays[/bold] plain" in " ".join(out.split())
        code, out, err = cli("plugins", "show", "bracketed")
        assert code == 0 and "[noise] to [c]" in out and "doc:      noise [std]" in out
        assert "distribution:  - (not installed)" in out
