"""``ganstack import char-cnn-rnn FILE.t7``: Reed's Torch7 text encoder into an encoder file for the
``reed-char-cnn-rnn`` text encoder, and ``--verify DATA_DIR``: encode StackGAN's captions with it
and compare with the dataset's ``char-CNN-RNN-embeddings.pickle``, so one command confirms the import.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import torch

from ganstack.build.devices import resolve_device
from ganstack.errors import CheckpointError, DataError, UserError
from ganstack.interfaces import ImportContext
from ganstack_defaults.data.stackgan import EMBEDDINGS_FILE, read_split_text
from ganstack_defaults.text.reed import (
    ReedArchitecture,
    ReedEncoder,
    ReedOptions,
    save_encoder_file,
    sha256_of,
)
from ganstack_defaults.text.reed_torch7 import NotReedEncoder, read_reed
from ganstack_defaults.text.torch7 import Torch7Error, load_torch7

COMMAND = "ganstack import char-cnn-rnn"
DOCS = "docs/reed-encoders.md"
WORST_SHOWN = 5  # mismatching captions listed by --verify
VERIFY_CHUNK = 1024  # captions compared at a time
DEVICES = ("cpu", "cuda", "mps", "auto")


def _doc(text: str) -> dict[str, str]:
    """One description for both the flag's --help and the recipe reference."""
    return {"doc": text, "help": text}


@attrs.define(frozen=True, kw_only=True)
class CharCnnRnnImportOptions:
    """Flags of ``ganstack import char-cnn-rnn``."""

    source: str = attrs.field(metadata={"positional": True, "metavar": "FILE.t7", **_doc(
        "Reed's Torch7 char-CNN-RNN file (.t7): the CUB, Oxford-102 or COCO encoder")})
    out: str | None = attrs.field(default=None, metadata={"metavar": "ENCODER.pt", **_doc(
        "encoder file to write (ENCODER.pt), used by `text_encoder: {type: reed-char-cnn-rnn, weights: ENCODER.pt}`")})
    verify: str | None = attrs.field(default=None, metadata={"metavar": "DATA_DIR", **_doc(
        "a StackGAN data folder (train/ and test/ with filenames.pickle and char-CNN-RNN-embeddings.pickle, "
        "captions in text/ or text_c10/): encode its captions and compare with its embeddings")})
    split: str | None = attrs.field(default=None, metadata=_doc(
        "with --verify: the split folder to check (default: every split folder holding both pickles)"))
    limit: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)),
                                    metadata={"metavar": "N", **_doc(
                                        "with --verify: check the first N examples of each split only")})
    tolerance: float = attrs.field(default=1e-3, validator=attrs.validators.gt(0), metadata=_doc(
        "with --verify: a caption matches when no value of its embedding differs by more than this"))
    text_dir: str = attrs.field(default="text", metadata=_doc(
        "with --verify: the caption folder under the data folder (text_c10 is tried when text is absent)"))
    lowercase: bool = attrs.field(default=False, metadata=_doc(
        "with --verify: lower-case captions first, as the encoder's `lowercase: true` does"))
    device: str = attrs.field(default="cpu", validator=attrs.validators.in_(DEVICES),
                              metadata=_doc("with --verify: where to encode (cpu, cuda, mps or auto)"))


def read_t7_encoder(path: Path) -> tuple[ReedArchitecture, dict[str, np.ndarray], str]:
    """The architecture, weights and place in the file of the encoder in a ``.t7`` file."""
    where = f"{COMMAND} SOURCE"
    try:
        obj = load_torch7(path)
    except FileNotFoundError:
        raise CheckpointError("file not found", file=str(path), path=where,
                              fix=f"give the path of Reed's .t7 encoder; {DOCS} lists the files and where they are "
                              "downloaded") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read the file ({exc.strerror or exc})", file=str(path), path=where,
                              fix="give the path of a readable .t7 file") from None
    except Torch7Error as exc:
        raise CheckpointError(f"not a readable Torch7 file ({exc})", file=str(path), path=where,
                              fix="the file may be truncated or of another format; download it again") from None
    try:
        return read_reed(obj)
    except NotReedEncoder as exc:
        raise CheckpointError(f"not one of Reed's char-CNN-RNN text encoders: {exc}", file=str(path), path=where,
                              fix=f"give one of the encoder files {DOCS} lists (lm_sje_..._cub_hybrid_gru18_... .t7, "
                              "lm_sje_flowers_..._hybrid_... .t7 or coco_gru18_..._net_T.t7); a generator's "
                              "net_G.t7 is not one") from None


def describe(architecture: ReedArchitecture) -> str:
    convs = [layer for layer in architecture.layers if layer.kind == "conv"]
    rnn = {"gru": "FixedGRU", "rnn": "FixedRNN"}[architecture.rnn]
    pooled = "mean of the hidden states" if architecture.average else "last hidden state"
    return (f"{len(convs)} temporal convolutions ({' -> '.join(str(c.out_channels) for c in convs)}), {rnn} over "
            f"{architecture.steps} steps of {architecture.hidden} units ({pooled}) -> {architecture.dim}-d")


def run_char_cnn_rnn_import(options: CharCnnRnnImportOptions, ctx: ImportContext) -> None:
    """Reed's Torch7 char-CNN-RNN into an encoder file; optionally checked against a StackGAN dataset."""
    if options.out is None and options.verify is None:
        raise UserError("nothing to do: neither --out nor --verify was given", path=COMMAND,
                        fix="add --out ENCODER.pt to write the encoder, --verify DATA_DIR to check it against "
                        "a dataset's embeddings, or both")
    source = Path(options.source)
    architecture, arrays, place = read_t7_encoder(source)
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
    ctx.report(f"read {place} of {source}: {describe(architecture)}")
    if options.out is not None:
        out = Path(options.out)
        provenance = {"file": source.name, "sha256": sha256_of(source), "encoder": place}
        try:
            save_encoder_file(out, architecture, tensors, provenance)
        except OSError as exc:
            raise UserError(f"cannot write the encoder file ({exc.strerror or exc})", file=str(out),
                            path=f"{COMMAND} --out", fix="choose a writable path") from None
        ctx.report(f"wrote {out}; use it with `text_encoder: {{type: reed-char-cnn-rnn, weights: {out}}}`")
    if options.verify is not None:
        try:
            device = resolve_device(options.device)
        except UserError:
            raise UserError(f"--device {options.device}: that device is not available here", path=f"{COMMAND} --device",
                            fix="use --device cpu, or auto to take the best one present") from None
        encoder = ReedEncoder(ReedOptions(weights=options.out or str(source), lowercase=options.lowercase),
                              architecture, tensors).to(device)
        verify(encoder, Path(options.verify), options, ctx)


def _splits(root: Path, chosen: str | None) -> list[str]:
    if not root.is_dir():
        raise DataError("data folder not found", file=str(root), path=f"{COMMAND} --verify",
                        fix="give the StackGAN data folder holding train/ and test/ (docs/datasets.md)")
    if chosen is not None:
        return [chosen]
    found = sorted(p.name for p in root.iterdir()
                   if (p / "filenames.pickle").is_file() and (p / EMBEDDINGS_FILE).is_file())
    if not found:
        raise DataError(f"no split folder here holds filenames.pickle and {EMBEDDINGS_FILE}", file=str(root),
                        path=f"{COMMAND} --verify",
                        fix="give the folder holding StackGAN's train/ and test/ (e.g. Data/birds); "
                        "docs/datasets.md shows the layout")
    return found


@torch.no_grad()
def verify(encoder: ReedEncoder, root: Path, options: CharCnnRnnImportOptions, ctx: ImportContext) -> None:
    """Encode each split's captions, compare with its stored embeddings, report; a mismatch is an error."""
    total = matched = 0
    worst: list[tuple[float, float, str]] = []
    for split in _splits(root, options.split):
        keys, captions, stored = read_split_text(root, split, text_dir=options.text_dir, limit=options.limit)
        if stored.shape[-1] != encoder.dim:
            raise DataError(f"the stored embeddings have {stored.shape[-1]} dimensions; this encoder gives "
                            f"{encoder.dim}", file=str(root / split / EMBEDDINGS_FILE), path=f"{COMMAND} --verify",
                            fix="verify against the data of the dataset this encoder belongs to")
        pairs = [(i, j) for i, lines in enumerate(captions) for j in range(min(len(lines), stored.shape[1]))]
        texts = [captions[i][j] for i, j in pairs]
        unpaired = sum(len(lines) for lines in captions) - len(pairs)
        per_caption, cosine, abs_sum = np.zeros(len(pairs)), np.zeros(len(pairs)), 0.0
        for start in range(0, len(pairs), VERIFY_CHUNK):  # bounded memory on a split of 100k captions
            chunk = slice(start, start + VERIFY_CHUNK)
            ours = encoder.encode_text(texts[chunk]).double().cpu().numpy()
            theirs = np.stack([stored[i, j] for i, j in pairs[chunk]]).astype(np.float64)
            diff = np.abs(ours - theirs)
            per_caption[chunk], abs_sum = diff.max(axis=1), abs_sum + float(diff.sum())
            norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
            cosine[chunk] = (ours * theirs).sum(axis=1) / np.maximum(norms, 1e-12)
        ok = per_caption <= options.tolerance
        total, matched = total + len(pairs), matched + int(ok.sum())
        extra = f"; {unpaired} caption lines beyond the stored embeddings left out" if unpaired else ""
        ctx.report(f"{split}: {len(pairs)} captions of {len(keys)} examples{extra}")
        ctx.report(f"  |difference| mean {abs_sum / max(1, per_caption.size * encoder.dim):.3g}, max "
                   f"{per_caption.max(initial=0.0):.3g}; cosine similarity mean "
                   f"{cosine.mean() if len(pairs) else float('nan'):.6f}, min {cosine.min(initial=1.0):.6f}")
        ctx.report(f"  {int(ok.sum())} of {len(pairs)} captions match within {options.tolerance:g}")
        bad = np.flatnonzero(~ok)
        for n in bad[np.argsort(-per_caption[bad], kind="stable")[:WORST_SHOWN]]:
            i, j = pairs[n]
            worst.append((float(per_caption[n]), float(cosine[n]), f"{split}/{keys[i]} line {j + 1}: {texts[n]!r}"))
    if total == 0:
        raise DataError("no caption to compare", file=str(root), path=f"{COMMAND} --verify",
                        fix="check that the caption files under the data folder hold captions")
    worst.sort(key=lambda w: -w[0])
    for gap, cos, where in worst[:WORST_SHOWN]:
        ctx.report(f"  differs: {where} (max |difference| {gap:.3g}, cosine {cos:.4f})")
    if matched < total:
        raise UserError(
            f"{total - matched} of {total} captions' embeddings differ from the dataset's by more than "
            f"{options.tolerance:g}", file=str(root), path=f"{COMMAND} --verify",
            fix="if nearly all match, the rest are captions preprocessed otherwise when the embeddings were "
            "made (try --lowercase, or a larger --tolerance); if none match, this encoder did not make these "
            f"embeddings: use the encoder of this dataset ({DOCS})")
    ctx.report(f"verified: all {total} captions match the stored embeddings within {options.tolerance:g}")
