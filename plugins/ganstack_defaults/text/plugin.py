"""The default text encoders, registered under kind ``text_encoder``, and the importer of Reed's.

- ``precomputed``: the dataset's stored embeddings (the paper's setting);
- ``bow``: a bag of words (and word n-grams), trained with the generator or fixed;
- ``char-cnn-rnn``: Reed et al.'s character CNN-RNN (pretrain it with ``ganstack pretrain-encoder``);
- ``sentence-transformer``: frozen all-MiniLM-L6-v2 from an optional package;
- ``reed-char-cnn-rnn``: Reed's pretrained encoders themselves (CUB, Oxford-102, COCO), frozen, from
  a file written by the ``char-cnn-rnn`` importer (``ganstack import char-cnn-rnn FILE.t7``).
- ``word-gru``: learnt word vectors read in order by a bidirectional GRU.
"""

from __future__ import annotations

from ganstack.components.registry import Register
from ganstack.hookspecs import hookimpl
from ganstack.interfaces import TextEncoderContext
from ganstack_defaults.text.bow import BagOfWordsEncoder, BowOptions
from ganstack_defaults.text.charcnnrnn import CharCnnRnnEncoder, CharCnnRnnOptions
from ganstack_defaults.text.minilm import MiniLMEncoder, MiniLMOptions
from ganstack_defaults.text.precomputed import PrecomputedEncoder, PrecomputedOptions
from ganstack_defaults.text.reed import ReedOptions, build_reed
from ganstack_defaults.text.reed_import import CharCnnRnnImportOptions, run_char_cnn_rnn_import
from ganstack_defaults.text.wordgru import WordGruEncoder, WordGruOptions


def build_precomputed(options: PrecomputedOptions, ctx: TextEncoderContext) -> PrecomputedEncoder:
    """The dataset's precomputed embeddings (StackGAN's char-CNN-RNN ones); cannot embed new text."""
    return PrecomputedEncoder(options).to(ctx.device)


def build_bow(options: BowOptions, ctx: TextEncoderContext) -> BagOfWordsEncoder:
    """Bag of words (and optionally word n-grams) of the training captions, learnt or fixed."""
    return BagOfWordsEncoder(options).to(ctx.device)


def build_char_cnn_rnn(options: CharCnnRnnOptions, ctx: TextEncoderContext) -> CharCnnRnnEncoder:
    """Reed et al.'s hybrid character CNN-RNN; pretrain it on image-caption pairs."""
    return CharCnnRnnEncoder(options).to(ctx.device)


def build_sentence_transformer(options: MiniLMOptions, ctx: TextEncoderContext) -> MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (384-d); needs ganstack[sentence-transformer]."""
    return MiniLMEncoder(options).to(ctx.device)


def build_word_gru(options: WordGruOptions, ctx: TextEncoderContext) -> WordGruEncoder:
    """Word vectors read in order by a bidirectional GRU: it reads word order, which a bag of words does not."""
    return WordGruEncoder(options).to(ctx.device)


@hookimpl
def register_components(register: Register) -> None:
    register("text_encoder", "precomputed", build_precomputed, options=PrecomputedOptions)
    register("text_encoder", "bow", build_bow, options=BowOptions)
    register("text_encoder", "char-cnn-rnn", build_char_cnn_rnn, options=CharCnnRnnOptions)
    register("text_encoder", "sentence-transformer", build_sentence_transformer, options=MiniLMOptions)
    register("text_encoder", "reed-char-cnn-rnn", build_reed, options=ReedOptions)
    register("importer", "char-cnn-rnn", run_char_cnn_rnn_import, options=CharCnnRnnImportOptions)
    register("text_encoder", "word-gru", build_word_gru, options=WordGruOptions)
