"""Word features in use (issue #13): the encoders that give words, AttnGAN's attention, and the
``attention-refiner`` stage trained on shapes with each of those encoders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import write
from ganstack.interfaces import Condition, StageContext, StageOutput, TextFeatures
from ganstack_defaults.networks.attention import (
    AttentionRefiner,
    AttentionRefinerOptions,
    build_attention_refiner,
    word_attention,
)
from ganstack_defaults.text import minilm as text_minilm
from ganstack_defaults.text.bow import BagOfWordsEncoder, BowOptions
from ganstack_defaults.text.vocab import Vocabulary
from ganstack_defaults.text.wordgru import WordGruEncoder, WordGruOptions

HAS_MINILM = all(importlib.util.find_spec(m) is not None for m in (text_minilm.PACKAGE, "tokenizers", "safetensors"))
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason='optional package missing: pip install '
                                  '"ganstack[sentence-transformer]"')


class Captions:
    embedding_dim = None

    def __init__(self, captions: list[str]) -> None:
        self._captions = captions

    def captions(self) -> list[str]:
        return list(self._captions)


# ------------------------------------------------------------------------------------ encoders
def test_bow_word_feature_is_the_mean_of_the_terms_holding_the_word() -> None:
    torch.manual_seed(0)
    encoder = BagOfWordsEncoder(BowOptions(dim=4, max_vocab=12, ngrams=3))
    encoder.vocabulary = Vocabulary(["a", "red", "circle", "a red", "red circle", "a red circle", "blue"], ngrams=3)
    table = encoder.bag.weight.detach()
    row = {term: table[i + 1] for i, term in enumerate(encoder.vocabulary.words)}
    unknown = table[0]
    out = encoder.encode_text(["a red circle", "BLUE", "", "red circle on"])
    assert isinstance(out, TextFeatures) and encoder.word_dim == 4
    assert out.words.shape == (4, 3, 4) and out.mask.tolist() == [
        [True, True, True], [True, False, False], [False, False, False], [True, True, True]]
    words = out.words.detach()
    # "a": itself, "a red", "a red circle"; "red": itself, "a red", "red circle", "a red circle"
    torch.testing.assert_close(words[0, 0], (row["a"] + row["a red"] + row["a red circle"]) / 3)
    torch.testing.assert_close(words[0, 1], (row["red"] + row["a red"] + row["red circle"] + row["a red circle"]) / 4)
    torch.testing.assert_close(words[0, 2], (row["circle"] + row["red circle"] + row["a red circle"]) / 3)
    torch.testing.assert_close(words[1, 0], row["blue"])
    # "on" and the runs "circle on", "red circle on" are unknown terms (row 0), as in the sentence's bag
    torch.testing.assert_close(words[3, 2], (3 * unknown) / 3)
    torch.testing.assert_close(words[3, 1], (row["circle"] + row["red circle"] + 2 * unknown) / 4)
    assert torch.equal(words[1, 1:], torch.zeros(2, 4)) and torch.equal(words[2], torch.zeros(3, 4))
    # the sentence vector is the bag of every term, as without words
    torch.testing.assert_close(out.sentence[0].detach(), torch.stack([row[t] for t in (
        "a", "red", "circle", "a red", "red circle", "a red circle")]).mean(0))


def test_bow_single_words_give_each_words_own_vector_at_the_tables_size() -> None:
    encoder = BagOfWordsEncoder(BowOptions(dim=5, word_dim=3, max_vocab=10))
    encoder.prepare(Captions(["a red circle", "a blue square"]))
    out = encoder.encode_text(["blue circle", "a"])
    assert encoder.word_dim == 3 and out.sentence.shape == (2, 5) and out.words.shape == (2, 2, 3)
    table = encoder.bag.weight.detach()
    index = encoder.vocabulary.indices("blue circle")
    torch.testing.assert_close(out.words[0].detach(), table[index])
    assert out.mask.sum(1).tolist() == [2, 1]


def test_word_gru_words_are_its_states_for_the_captions_words() -> None:
    torch.manual_seed(0)
    encoder = WordGruEncoder(WordGruOptions(dim=6, word_dim=5, hidden=7, max_vocab=40, max_words=5,
                                            word_dropout=0.0))
    captions = ["a red circle on a blue background", "a blue square", "", "red"]
    encoder.prepare(Captions(captions))
    encoder.eval()
    out = encoder.encode_text(captions)
    assert encoder.word_dim == 14 and out.words.shape == (4, 5, 14)
    assert out.mask.sum(1).tolist() == [5, 3, 0, 1]  # cut at max_words; the empty caption has no word
    for i, caption in enumerate(captions[:2]):  # each caption alone, unpacked, gives the same states
        table, _ = encoder.rows([caption])
        alone, _ = encoder.gru(encoder.embed(table))
        n = int(out.mask[i].sum())
        torch.testing.assert_close(out.words[i, :n].detach(), alone[0].detach())
        assert torch.equal(out.words[i, n:].detach(), torch.zeros(5 - n, 14))
    assert torch.equal(out.words[2].detach(), torch.zeros(5, 14))


@needs_minilm
def test_sentence_transformer_words_are_the_tokenizers_words_and_leave_the_sentence_alone() -> None:
    plain = text_minilm.MiniLMEncoder(text_minilm.MiniLMOptions())
    assert plain.word_dim == 0 and not isinstance(plain.encode_text(["a red circle"]), TextFeatures)
    encoder = text_minilm.MiniLMEncoder(text_minilm.MiniLMOptions(words=True))
    captions = ["a squarish circle", "the bird's wing is red.", ""]
    assert encoder.tokenizer.encode("squarish", add_special_tokens=False).tokens[:3] == ["sq", "##ua", "##rish"]
    out = encoder.encode_text(captions)
    assert encoder.word_dim == 384 and out.words.shape == (3, 8, 384)
    # a word of three word pieces is one word; the, bird, ', s, wing, is, red, . : punctuation marks
    # are words; [CLS]/[SEP] are none
    assert out.mask.sum(1).tolist() == [3, 8, 0]
    assert torch.equal(out.words[0, 3:], torch.zeros(5, 384)) and torch.equal(out.words[2], torch.zeros(8, 384))
    assert (out.words[out.mask].norm(dim=1) > 1).all()
    torch.testing.assert_close(out.sentence, plain.encode_text(captions))
    uncached = text_minilm.MiniLMEncoder(text_minilm.MiniLMOptions(words=True, cache=False))
    torch.testing.assert_close(uncached.encode_text(captions[:1]).words[0], out.words[0, :3], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------- attention
def test_attention_is_a_softmax_over_the_real_words_only() -> None:
    # two regions of 2 channels; three words, the last one padding with a huge vector
    regions = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # region r has channels regions[0, :, 0, r]
    words = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    context, weights = word_attention(regions, words, mask)
    # region 0 = (1, 0): scores 1, 0 -> softmax (e/(e+1), 1/(e+1)); region 1 = (0, 2): scores 0, 2
    e = torch.e
    expected = torch.tensor([[[e / (e + 1), 1 / (e + 1), 0.0], [1 / (1 + e**2), e**2 / (1 + e**2), 0.0]]])
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2))
    torch.testing.assert_close(context[0, :, 0, 0], torch.tensor([e / (e + 1), 1 / (e + 1)]))
    torch.testing.assert_close(context[0, :, 0, 1], torch.tensor([1 / (1 + e**2), e**2 / (1 + e**2)]))
    # a caption without words: no weight anywhere and a zero context, no NaN
    context, weights = word_attention(regions, words, torch.zeros(1, 3, dtype=torch.bool))
    assert torch.equal(weights, torch.zeros(1, 2, 3)) and torch.equal(context, torch.zeros(1, 2, 1, 2))


def _refiner(**options: object) -> AttentionRefiner:
    ctx = StageContext(index=1, num_stages=2, text_dim=8, noise_dim=4, cond_dim=6, in_size=16,
                       in_feature_channels=16, word_dim=5)
    return build_attention_refiner(AttentionRefinerOptions(ngf=8, scale=2, residual_blocks=1, **options), ctx)


def test_attention_refiner_gives_padding_no_weight_and_trains_its_word_projection() -> None:
    torch.manual_seed(0)
    stage = _refiner()
    assert stage.requests == frozenset({"words"}) and stage.out_size == 32 and stage.feature_channels == 4
    prev = StageOutput(torch.randn(3, 3, 16, 16), torch.randn(3, 16, 16, 16))
    condition = Condition(torch.randn(3, 6), torch.randn(3, 6), None)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [False] * 4])
    words = torch.randn(3, 4, 5)
    out = stage(None, condition, prev, fields={"words": words, "word_mask": mask})
    assert out.image.shape == (3, 3, 32, 32) and out.features.shape == (3, 4, 32, 32)
    weights = stage.last_attention
    assert weights.shape == (3, 16, 4)  # 4x4 regions of the encoded 16x16 image
    assert torch.equal(weights[~mask[:, None, :].expand_as(weights)], torch.zeros(int((~mask).sum()) * 16))
    torch.testing.assert_close(weights.sum(-1), torch.tensor([1.0, 1.0, 0.0])[:, None].expand(3, 16))
    assert torch.equal(stage.last_mask, mask)
    out.image.mean().backward()
    assert stage.project_words.weight.grad.abs().sum() > 0
    # what padding holds does not matter
    stage.eval()
    a = stage(None, condition, prev, fields={"words": words, "word_mask": mask}).image
    b = stage(None, condition, prev, fields={"words": words + 50 * ~mask[..., None], "word_mask": mask}).image
    torch.testing.assert_close(a, b)


def test_attention_refiner_without_the_sentence_reads_the_words_alone() -> None:
    stage = _refiner(sentence=False, input="features")
    assert stage.joint[0].in_channels == 16 + 16  # features and their word context, no condition
    assert _refiner().joint[0].in_channels == 32 + 6 + 32  # 4*ngf encoded image, condition, context


# ------------------------------------------------------------------------------- in a recipe
ENCODERS = {
    "bow": "{type: bow, dim: 16, max_vocab: 256, ngrams: 2}",
    "word-gru": "{type: word-gru, dim: 16, word_dim: 8, hidden: 6}",
    "sentence-transformer": "{type: sentence-transformer, words: true}",
}
ENCODER_CLASSES = {"bow": BagOfWordsEncoder, "word-gru": WordGruEncoder}


def attention_recipe(encoder: str) -> str:
    return f"""schema_version: 1
name: tiny_attention
text_encoder: {encoder}
dataset: {{type: shapes, train_size: 48, test_size: 16, holdout_size: 16}}
noise_dim: 8
stages:
  - conditioner: {{type: linear, condition_dim: 8}}
    generator: {{type: stackgan-stage1, ngf: 8, out_size: 16}}
    discriminator: {{type: projection, ndf: 4}}
  - conditioner: {{type: linear, condition_dim: 8}}
    generator: {{type: attention-refiner, ngf: 8, scale: 2, residual_blocks: 1}}
    discriminator: {{type: projection, ndf: 4, unconditional_head: true}}
training: {{schedule: joint, epochs: 1, batch_size: 8, device: cpu, seed: 3}}
output: {{log_every: 1, sample_every: 2, checkpoint_every: 2, sample_count: 3}}
"""


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """Every ``fields`` the attention refiner is called with (in this process)."""
    calls: list[dict[str, torch.Tensor]] = []
    forward = AttentionRefiner.forward

    def recording(self, z, condition, prev, *, fields):  # noqa: ANN001, ANN202
        if not fields["words"].is_meta:  # the size estimate runs the stack without data
            calls.append({k: v.detach().clone() for k, v in fields.items()})
        return forward(self, z, condition, prev, fields=fields)

    monkeypatch.setattr(AttentionRefiner, "forward", recording)
    return calls


@pytest.mark.parametrize("name", [
    "bow", "word-gru", pytest.param("sentence-transformer", marks=needs_minilm)])
def test_attention_refiner_trains_on_shapes_with_the_words_of_each_encoder(
        name: str, received: list[dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch, cli,
        tmp_path: Path) -> None:
    encoder_class = ENCODER_CLASSES.get(name, text_minilm.MiniLMEncoder)
    encoded: list[TextFeatures] = []
    encode = encoder_class.encode_text

    def recording(self, texts):  # noqa: ANN001, ANN202
        out = encode(self, texts)
        if not out.words.is_meta:
            encoded.append(TextFeatures(*(t.detach().clone() for t in out)))
        return out

    monkeypatch.setattr(encoder_class, "encode_text", recording)
    path = write(tmp_path / "attention.yaml", attention_recipe(ENCODERS[name]))
    code, out, err = cli("run", path, "--max-steps", "2", "--out", tmp_path / "run")
    assert code == 0, out + err
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(v == v for line in lines for v in line.values() if isinstance(v, float))  # no NaN
    assert received and all(set(f) == {"words", "word_mask"} for f in received)
    # each call got exactly the words and mask an encoding of the text encoder gave (training batches
    # of 8, the sample sheet's 3 captions)
    for fields in received:
        assert any(torch.equal(fields["words"], e.words) and torch.equal(fields["word_mask"], e.mask)
                   for e in encoded), "the stage got word features the encoder did not give"
    assert {f["words"].shape[0] for f in received} >= {8}
    assert all(f["word_mask"].any(1).all() for f in received)  # every shapes caption has words


def test_sampled_captions_reach_the_stage_with_their_own_word_counts(
        received: list[dict[str, torch.Tensor]], cli, tmp_path: Path) -> None:
    path = write(tmp_path / "attention.yaml", attention_recipe(ENCODERS["bow"]))
    assert cli("run", path, "--max-steps", "1", "--out", tmp_path / "run")[0] == 0
    received.clear()
    code, out, err = cli("sample", tmp_path / "run", "--text", "a red circle", "--text",
                         "the background is blue and the square is small", "--out", tmp_path / "drawn")
    assert code == 0, out + err
    assert [f["word_mask"].sum(1).tolist() for f in received] == [[3, 9]]


def test_attention_refiner_with_an_encoder_without_words_says_which_have_them(cli, tmp_path: Path) -> None:
    path = write(tmp_path / "attention.yaml", attention_recipe("{type: char-cnn-rnn, dim: 16, rnn_hidden: 8}"))
    code, out, err = cli("check", path)
    assert code == 2
    message = " ".join((out + err).split())
    assert "stages[1].generator" in message and "attends to the caption's words" in message
    assert "bow, word-gru, or sentence-transformer with words: true" in message
