"""Reed's pretrained char-CNN-RNN: Torch7 files of the released structure, written here at small widths,
imported through the CLI, encoded as Reed's equations say (computed here in numpy), verified against a
miniature StackGAN dataset, and used by a recipe to draw from new sentences."""

from __future__ import annotations

import fractions
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import torch7_writer as t7
from conftest import TINY, write

# Reed's alphabet as his demo spells it (70 symbols; '-' twice, the later position wins).
REED_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
CHANNELS = (6, 7, 5)  # the released encoders: 384, 512, 512
DIM = 8  # the released encoders: 1024
CAPTIONS = [
    "this bird is red with a short beak",
    "This Bird has a black-and-white crown; a café-au-lait belly!",
    "",
    "a very long caption " * 15,  # 300 characters: the encoder reads the first 201
    "the flower has pink petals (and [a] yellow {centre}) & 3 leaves ~ `really` <so> \"bright\" | 100% #1",
]


# ------------------------------------------------------------------------------ Reed's equations
def one_hot(text: str, lowercase: bool = False) -> np.ndarray:
    """201 x 70: row t is byte t of the caption (Lua strings are bytes), column = the symbol's last position."""
    position = {symbol: i for i, symbol in enumerate(REED_ALPHABET)}
    x = np.zeros((201, 70))
    for t, byte in enumerate((text.lower() if lowercase else text).encode("utf-8")[:201]):
        if chr(byte) in position:
            x[t, position[chr(byte)]] = 1.0
    return x


def temporal_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, width: int) -> np.ndarray:
    """nn.TemporalConvolution: output frame t = W . (input frames t..t+kW-1 concatenated) + b."""
    frames = np.stack([x[t:t + width].reshape(-1) for t in range(len(x) - width + 1)])
    return frames @ weight.T + bias


def temporal_max_pool(x: np.ndarray, width: int, stride: int) -> np.ndarray:
    return np.stack([x[t * stride:t * stride + width].max(axis=0) for t in range((len(x) - width) // stride + 1)])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def reed_embedding(text: str, truth: dict, lowercase: bool = False) -> np.ndarray:
    x = one_hot(text, lowercase)
    pools = [(3, 3), (3, 3), (3, 2)] if truth["variant"] == "rnn8" else [(3, 3), (3, 3), None]
    for (weight, bias), pool in zip(truth["convs"], pools, strict=True):
        x = temporal_conv(x, weight.astype(np.float64), bias.astype(np.float64), 4)
        x = np.where(x > 1e-6, x, 0.0)  # nn.Threshold()
        if pool:
            x = temporal_max_pool(x, *pool)
    lin = {role: (w.astype(np.float64), b.astype(np.float64)) for role, (w, b) in truth["rnn"].items()}

    def f(role: str, v: np.ndarray) -> np.ndarray:
        return lin[role][0] @ v + lin[role][1]

    hs = []
    if truth["variant"] == "gru18":
        assert len(x) == 18
        h = np.tanh(f("i2h", x[0]))
        hs.append(h)
        for xt in x[1:]:
            u = sigmoid(f("i2h_update", xt) + f("h2h_update", h))
            r = sigmoid(f("i2h_reset", xt) + f("h2h_reset", h))
            candidate = np.tanh(f("i2h", xt) + f("h2h", r * h))
            h = u * candidate + (1 - u) * h
            hs.append(h)
    else:
        assert len(x) == 8
        h = np.maximum(f("i2h", x[0]), 0)
        hs.append(h)
        for xt in x[1:]:
            h = np.maximum(f("i2h", xt) + f("h2h", h), 0)
            hs.append(h)
    weight, bias = truth["out"]
    return weight.astype(np.float64) @ (np.mean(hs, axis=0) if truth["average"] else hs[-1]) + bias


# ------------------------------------------------------------------------------ files of the released kinds
def cub_file(path: Path, seed: int = 0) -> tuple[Path, dict]:
    """Like lm_sje_nc4_cub_hybrid_gru18_a1_c512_...t7: a checkpoint table whose protos.enc_doc is the encoder,
    every parameter of both encoders in one flat storage (model_utils.combine_all_parameters)."""
    params = t7.Params(seed)
    encoder, truth = t7.reed_encoder(params, channels=CHANNELS, dim=DIM)
    image_encoder = t7.sequential(t7.Obj("nn.Linear", weight=np.ones((DIM, 4)), bias=np.zeros(DIM)))
    checkpoint = t7.Table({"protos": t7.Table({"enc_doc": encoder, "enc_image": image_encoder}),
                           "opt": t7.Table({"doc_length": 201, "avg": 1, "cnn_dim": CHANNELS[2],
                                            "savefile": "sje_nc4_cub_hybrid_gru18_a1_c512"}),
                           "i": 30000, "epoch": 300.0, "train_losses": t7.Table([1.5, 1.25])})
    return t7.save_t7(checkpoint, path), truth


def coco_file(path: Path, seed: int = 1) -> tuple[Path, dict]:
    """Like coco_gru18_..._net_T.t7: the gModule itself, saved from the GPU (CudaTensor), cudnn activations."""
    params = t7.Params(seed, typename="torch.CudaTensor")
    encoder, truth = t7.reed_encoder(params, channels=CHANNELS, dim=DIM, prefix="cudnn")
    return t7.save_t7(encoder, path), truth


def cvpr_file(path: Path, seed: int = 2) -> tuple[Path, dict]:
    """cvpr2016's HybridCNN + FixedRNN (8 ReLU steps) in a checkpoint table."""
    params = t7.Params(seed)
    encoder, truth = t7.reed_encoder(params, channels=CHANNELS, dim=DIM, variant="rnn8")
    return t7.save_t7(t7.Table({"protos": t7.Table({"enc_doc": encoder})}), path), truth


def legacy_file(path: Path, seed: int = 3) -> tuple[Path, dict]:
    """FixedGRU with avg 0 (the last hidden state), saved by an nngraph older than gModule-as-Container."""
    params = t7.Params(seed)
    encoder, truth = t7.reed_encoder(params, channels=CHANNELS, dim=DIM, legacy=True, average=False)
    return t7.save_t7(t7.Table({"protos": t7.Table({"enc_doc": encoder})}), path), truth


def encoder_from(path: Path, **options: object):
    from ganstack.components.loader import load_plugins
    from ganstack.interfaces import TextEncoderContext

    entry = load_plugins().registry.get("text_encoder", "reed-char-cnn-rnn")
    return entry.factory(entry.options(weights=str(path), **options), TextEncoderContext())


@pytest.fixture(scope="module")
def cub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return cub_file(tmp_path_factory.mktemp("reed") / "lm_sje_cub_hybrid_gru18.t7")


# ------------------------------------------------------------------------------ the Torch7 reader
def test_reader_keeps_shared_storages_strides_and_offsets(tmp_path: Path) -> None:
    from ganstack_defaults.text.torch7 import load_torch7

    storage = t7.Storage(np.arange(12, dtype=np.float32))
    table = t7.Table({"a": t7.View(storage, 0, (2, 3)), "t": t7.View(storage, 6, (3, 2), (1, 3)),
                      "cuda": t7.View(t7.Storage(np.arange(4, dtype=np.float32), "torch.CudaStorage"), 1, (3,),
                                      typename="torch.CudaTensor"), "flag": True, 1: "one", "x": 2.5})
    loaded = load_torch7(t7.save_t7(table, tmp_path / "t.t7"))
    np.testing.assert_array_equal(loaded["a"].numpy(), [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(loaded["t"].numpy(), [[6, 9], [7, 10], [8, 11]])  # a transposed view
    np.testing.assert_array_equal(loaded["cuda"].numpy(), [1, 2, 3])
    assert loaded["a"].storage is loaded["t"].storage  # written once, referenced after
    assert (loaded["flag"], loaded[1], loaded["x"]) == (True, "one", 2.5)


def test_reader_survives_deep_nesting_hostile_sizes_and_functions() -> None:
    import struct

    from ganstack_defaults.text.torch7 import LuaFunction, Torch7Error, read_torch7

    def ints(*values: int) -> bytes:
        return struct.pack(f"<{len(values)}i", *values)

    depth = 50_000  # {1 = {1 = {... nil}}}: no recursion limit is reached
    nested = b"".join(ints(3, i + 1, 1) + ints(1) + struct.pack("<d", 1.0) for i in range(depth)) + ints(0)
    table = read_torch7(nested)
    for _ in range(depth - 1):
        table = table[1]
    assert table[1] is None
    function = ints(8, 1) + ints(4) + b"\x1bLua" + ints(0)  # a Lua function: bytecode then upvalues (nil)
    loaded = read_torch7(function)
    assert isinstance(loaded, LuaFunction) and loaded.bytecode == b"\x1bLua"
    huge_table = ints(3, 1, 2**31 - 1)
    huge_storage = ints(4, 1) + ints(3) + b"V 1" + ints(18) + b"torch.FloatStorage" + struct.pack("<q", 10**15)
    for data, message in [(huge_table, "does not fit"), (huge_storage, "does not fit"), (ints(9), "unknown object type"),
                          (ints(2, 100) + b"short", "a string of 100 entries does not fit"),
                          (ints(1) + b"\x00\x00", "ends early")]:
        with pytest.raises(Torch7Error, match=message):
            read_torch7(data)


# ------------------------------------------------------------------------------ import and encode
@pytest.mark.parametrize("make", [cub_file, coco_file, cvpr_file, legacy_file],
                         ids=["cub", "coco", "cvpr-rnn", "legacy-nngraph-last-state"])
def test_imported_encoder_computes_reeds_equations(make, cli, tmp_path: Path) -> None:
    source, truth = make(tmp_path / "reed.t7")
    out = tmp_path / "encoder.pt"
    code, stdout, err = cli("import", "char-cnn-rnn", source, "--out", out)
    assert code == 0, err
    assert f"wrote {out}" in stdout
    steps = "8 steps" if truth["variant"] == "rnn8" else "18 steps"
    assert steps in stdout and f"-> {DIM}-d" in stdout
    encoder = encoder_from(out)
    got = encoder.encode_text(CAPTIONS).double().numpy()
    want = np.stack([reed_embedding(c, truth) for c in CAPTIONS])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert encoder.dim == DIM and encoder.can_encode_text and not encoder.trainable
    assert not list(encoder.parameters()) and encoder.state_dict() == {}  # frozen, and not in run checkpoints
    from ganstack_defaults.text.reed import load_reed_encoder  # the Python route, for `sample --embeddings`

    # the same batch, so the same kernels: a smaller batch may round differently on another CPU
    np.testing.assert_array_equal(load_reed_encoder(out).encode_text(CAPTIONS).numpy(), got.astype(np.float32))


def test_encoder_file_loads_with_weights_only_and_records_the_architecture(cub, cli, tmp_path: Path) -> None:
    source, _truth = cub
    out = tmp_path / "cub.pt"
    assert cli("import", "char-cnn-rnn", source, "--out", out)[0] == 0
    content = torch.load(out, weights_only=True)
    arch = content["architecture"]
    assert (arch["rnn"], arch["steps"], arch["average"], arch["hidden"], arch["dim"], arch["max_length"]) == \
        ("gru", 18, True, CHANNELS[2], DIM, 201)
    assert arch["alphabet"] == REED_ALPHABET
    assert [layer["kind"] for layer in arch["layers"]] == ["conv", "threshold", "maxpool"] * 2 + ["conv", "threshold"]
    assert arch["layers"][1]["threshold"] == 1e-6 and arch["layers"][2]["stride"] == 3
    assert content["source"]["file"] == source.name and content["source"]["encoder"] == "protos.enc_doc"
    assert len(content["source"]["sha256"]) == 64


def test_caption_reading_follows_reeds_demo(cub, cli, tmp_path: Path) -> None:
    source, truth = cub
    out = tmp_path / "cub.pt"
    assert cli("import", "char-cnn-rnn", source, "--out", out)[0] == 0
    exact, lowered = encoder_from(out), encoder_from(out, lowercase=True)
    rows = exact.one_hot(["-", "A", "é", "x" * 300]).numpy()
    assert rows[0, 0, 59] == 1 and rows[0, 0, 36] == 0  # '-' is column 60 (1-based), never 37
    assert rows[1].sum() == 0 and rows[2].sum() == 0  # a capital, and both bytes of 'é', are zero rows
    assert rows[3].sum() == 201  # cut at 201 characters
    text = "This Bird Is RED"
    np.testing.assert_allclose(lowered.encode_text([text]).double().numpy()[0], reed_embedding(text.lower(), truth),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(exact.encode_text([text]).numpy(), lowered.encode_text([text]).numpy(), atol=1e-4)


def test_import_help_names_the_values(capsys: pytest.CaptureFixture[str]) -> None:
    from ganstack.cli.main import main

    with pytest.raises(SystemExit):
        main(["import", "char-cnn-rnn", "--help"])
    shown = capsys.readouterr().out
    assert "--out ENCODER.pt" in shown and "--verify DATA_DIR" in shown and "FILE.t7" in shown


# ------------------------------------------------------------------------------ errors
def test_bad_t7_files_are_one_paragraph_each(cli, tmp_path: Path) -> None:
    good, _truth = cub_file(tmp_path / "good.t7")
    truncated = tmp_path / "truncated.t7"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = write(tmp_path / "notes.t7", "these are not the weights you are looking for\n")
    generator = t7.save_t7(t7.sequential(t7.Obj("nn.SpatialFullConvolution", weight=np.ones((2, 2)))),
                           tmp_path / "net_G.t7")
    no_encoder = t7.save_t7(t7.Table({"protos": t7.Table({"enc_image": t7.sequential()})}), tmp_path / "img.t7")
    cases = {tmp_path / "missing.t7": "file not found", truncated: "not a readable Torch7 file",
             garbage: "not a readable Torch7 file", generator: "holds a nn.Sequential, not an nngraph gModule",
             no_encoder: "holds no text encoder 'enc_doc' (it holds: enc_image)"}
    for path, message in cases.items():
        code, _out, err = cli("import", "char-cnn-rnn", path, "--out", tmp_path / "x.pt")
        assert code == 2, (path, err)
        assert message in err and str(path) in err and "Fix:" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.pt").exists()
    code, _out, err = cli("import", "char-cnn-rnn", good)
    assert code == 2 and "neither --out nor --verify" in err


def test_graph_that_is_not_reeds_encoder_is_refused(cli, tmp_path: Path) -> None:
    params = t7.Params(0)
    encoder, _truth = t7.reed_encoder(params, channels=CHANNELS, dim=DIM)
    inner = next(m for m in encoder.fields.get("modules") if m.typename == "nn.gModule")  # the FixedGRU
    wrappers = [m for m in inner.fields.get("modules") if m.typename == "nn.Sequential"]
    linear = wrappers[20].fields.get("modules")[0]  # one step's linear map gets weights of its own
    linear.fields.pairs = [(k, t7.View(t7.Storage(np.full(v.shape, 0.5, np.float32)), 0, v.shape))
                           if k == "weight" else (k, v) for k, v in linear.fields.pairs]
    path = t7.save_t7(encoder, tmp_path / "edited.t7")
    code, _out, err = cli("import", "char-cnn-rnn", path, "--out", tmp_path / "x.pt")
    assert code == 2 and "do not share their weights" in err, err


def test_missing_corrupt_or_foreign_encoder_file_in_a_recipe(cli, cub, tmp_path: Path) -> None:
    source, _truth = cub
    good = tmp_path / "good.pt"
    assert cli("import", "char-cnn-rnn", source, "--out", good)[0] == 0
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:300])
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "ganstack.reed-char-cnn-rnn", "extra": fractions.Fraction(1, 3)}, pickled)
    cases = {"missing.pt": "encoder file not found", "corrupt.pt": "not a readable encoder file",
             "foreign.pt": "not a char-CNN-RNN encoder file",
             "pickled.pt": "refused to load: it asks for 'fractions.Fraction', which an encoder file never holds"}
    for name, message in cases.items():
        recipe = write(tmp_path / f"r_{name}.yaml", f"base: {TINY}\n"
                       f"text_encoder: {{type: reed-char-cnn-rnn, weights: {name}}}\n")
        code, _out, err = cli("run", recipe, "--out", tmp_path / f"run_{name}", "--max-steps", "1")
        assert code == 2, err
        assert message in err and "text_encoder.weights" in err and "ganstack import char-cnn-rnn" in err, err
        assert "Traceback" not in err and "weights_only" not in err  # never the unsafe way


# ------------------------------------------------------------------------------ --verify
def stackgan_data(root: Path, truth: dict, *, wrong: bool = False) -> Path:
    """Two CUB-style examples with 3 captions each; their embeddings computed from Reed's equations."""
    keys = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111",
            "002.Laysan_Albatross/Laysan_Albatross_0002_1027"]
    captions = [["this bird is black with long wings", "a dark grey seabird", "long wings, short tail"],
                ["a white bird with a yellow beak", "this bird has grey wings and a white belly", "white and grey"]]
    for key, lines in zip(keys, captions, strict=True):
        write(root / "text" / f"{key}.txt", "\n".join(lines) + "\n")
    embeddings = np.stack([[reed_embedding(c, truth) for c in lines] for lines in captions]).astype(np.float32)
    if wrong:
        embeddings[1, 2] += 0.25
    (root / "test").mkdir(parents=True)
    with (root / "test" / "filenames.pickle").open("wb") as fh:
        pickle.dump(keys, fh, protocol=2)
    with (root / "test" / "char-CNN-RNN-embeddings.pickle").open("wb") as fh:
        pickle.dump(embeddings, fh, protocol=2)
    return root


def test_verify_reports_a_match_on_the_datasets_own_embeddings(cub, cli, tmp_path: Path) -> None:
    source, truth = cub
    data = stackgan_data(tmp_path / "birds", truth)
    code, out, err = cli("import", "char-cnn-rnn", source, "--verify", data)
    assert code == 0, err
    assert "test: 6 captions of 2 examples" in out
    assert "6 of 6 captions match within 0.001" in out
    assert "cosine similarity mean 1.000000" in out
    assert "verified: all 6 captions match" in out
    (data / "text").rename(data / "text_c10")  # StackGAN's download name, and one example only
    code, out, err = cli("import", "char-cnn-rnn", source, "--verify", data, "--split", "test", "--limit", "1")
    assert code == 0, err
    assert "test: 3 captions of 1 examples" in out and "3 of 3 captions match" in out


def test_verify_shows_a_mismatch(cub, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ganstack_defaults.text import reed, reed_import

    monkeypatch.setattr(reed_import, "VERIFY_CHUNK", 4)  # the wrong caption is in the second chunk
    monkeypatch.setattr(reed, "ENCODE_CHUNK", 3)
    source, truth = cub
    data = stackgan_data(tmp_path / "birds", truth, wrong=True)
    out_file = tmp_path / "enc.pt"
    code, out, err = cli("import", "char-cnn-rnn", source, "--out", out_file, "--verify", data)
    assert code == 2
    assert "5 of 6 captions match within 0.001" in out
    assert "differs: test/002.Laysan_Albatross/Laysan_Albatross_0002_1027 line 3: 'white and grey'" in out
    assert "max |difference| 0.25" in out
    assert "1 of 6 captions' embeddings differ" in err and "Traceback" not in err
    assert out_file.is_file()  # --out is written before the check
    other, _ = cub_file(tmp_path / "other.t7", seed=7)  # another encoder's embeddings: nothing matches
    code, out, err = cli("import", "char-cnn-rnn", other, "--verify", data)
    assert code == 2 and "0 of 6 captions match" in out and "did not make these embeddings" in err


def test_verify_needs_the_stackgan_layout(cub, cli, tmp_path: Path) -> None:
    source, truth = cub
    (tmp_path / "empty").mkdir()
    for folder, message in [(tmp_path / "nowhere", "data folder not found"),
                            (tmp_path / "empty", "no split folder here holds filenames.pickle")]:
        code, _out, err = cli("import", "char-cnn-rnn", source, "--verify", folder)
        assert code == 2 and message in err and "--verify" in err and "Traceback" not in err, err
    data = stackgan_data(tmp_path / "birds", truth)
    with (data / "test" / "char-CNN-RNN-embeddings.pickle").open("wb") as fh:
        pickle.dump(np.zeros((2, 3, DIM + 1), np.float32), fh, protocol=2)
    code, _out, err = cli("import", "char-cnn-rnn", source, "--verify", data)
    assert code == 2 and f"the stored embeddings have {DIM + 1} dimensions; this encoder gives {DIM}" in err


# ------------------------------------------------------------------------------ in a recipe
def test_recipe_trains_and_samples_new_sentences_with_the_imported_encoder(cub, cli, tmp_path: Path) -> None:
    import ganstack

    source, truth = cub
    assert cli("import", "char-cnn-rnn", source, "--out", tmp_path / "models" / "cub_encoder.pt")[0] == 0
    recipe = write(tmp_path / "models" / "reed.yaml", f"base: {TINY}\n"
                   "text_encoder: {type: reed-char-cnn-rnn, weights: cub_encoder.pt}\n")  # next to the recipe
    run = tmp_path / "run"
    code, _out, err = cli("run", recipe, "--out", run, "--max-steps", "2")
    assert code == 0, err
    sentence = "this bird is red with a short beak"
    code, _out, err = cli("sample", run, "--text", sentence, "--out", tmp_path / "samples")
    assert code == 0, err
    assert (tmp_path / "samples" / "caption000_sample00_stage2.png").is_file()
    model = ganstack.load(run, device="cpu")
    np.testing.assert_allclose(model.encode([sentence]).double().numpy()[0], reed_embedding(sentence, truth),
                               rtol=1e-4, atol=1e-5)
    (tmp_path / "models" / "cub_encoder.pt").rename(tmp_path / "elsewhere.pt")  # the file is the weights' home
    code, _out, err = cli("sample", run, "--text", sentence, "--out", tmp_path / "again")
    assert code == 2 and "encoder file not found" in err and "cub_encoder.pt" in err and "Traceback" not in err


def test_weights_trained_on_precomputed_embeddings_load_into_a_stack_with_the_encoder(cub, cli, tmp_path: Path) -> None:
    from ganstack.build.stack import build_stack
    from ganstack.recipe.resolve import load_recipe

    source, truth = cub
    assert cli("import", "char-cnn-rnn", source, "--out", tmp_path / "enc.pt")[0] == 0
    precomputed = write(tmp_path / "a.yaml", f"base: {TINY}\ntext_encoder: {{type: precomputed, dim: {DIM}}}\n")
    reed = write(tmp_path / "b.yaml", f"base: {TINY}\ntext_encoder: {{type: reed-char-cnn-rnn, weights: enc.pt}}\n")
    trained = build_stack(load_recipe(precomputed))
    stack = build_stack(load_recipe(reed))
    stack.load_state_dict(trained.state_dict())  # strict: no text-encoder key on either side
    sentence = "a bird with a red crown"
    np.testing.assert_allclose(stack.text_encoder.encode_text([sentence]).double().numpy()[0],
                               reed_embedding(sentence, truth), rtol=1e-4, atol=1e-5)
