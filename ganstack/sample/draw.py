"""Drawing images from a trained stack for any sentence: the ``ganstack.load`` API and ``ganstack sample``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from ganstack.atomic import ensure_dir
from ganstack.build.devices import resolve_device
from ganstack.build.estimate import host_memory, size_text
from ganstack.build.stack import Stack, build_stack
from ganstack.errors import UserError
from ganstack.interfaces import BOX, KEYPOINTS, WORD_FIELDS, TextFeatures, as_text_features
from ganstack.reading import read_text
from ganstack.recipe.resolve import ResolvedRecipe, recipe_from_dict
from ganstack.run_folder.checkpoint import checkpoint_recipe, checkpoint_step, load_checkpoint, load_weights


@attrs.define
class Samples:
    """Images for ``captions``: ``images[stage]`` is ``[len(captions) * n, 3, r, r]``, caption-major."""

    captions: list[str]
    n: int
    seeds: list[int]
    images: list[Tensor]
    fields: dict[str, Tensor] = attrs.field(factory=dict)  # per caption, as given (``{"box": [N, 4]}``)

    def image(self, caption: int, sample: int, stage: int) -> Tensor:
        return self.images[stage][caption * self.n + sample]


class TextToImage:
    """A trained stack ready to draw: ``generate(texts, n=..., seed=...)``."""

    batch_size = 64  # images drawn at once: `ganstack sample --n 10000` must not build one giant batch

    def __init__(self, stack: Stack, resolved: ResolvedRecipe, device: torch.device, step: int) -> None:
        self.stack = stack.eval()
        self.resolved = resolved
        self.device = device
        self.step = step

    @property
    def resolutions(self) -> tuple[int, ...]:
        return self.stack.resolutions

    def encode(self, texts: Sequence[str]) -> Tensor:
        """Embed new sentences with the run's own text encoder (vocabulary and weights as trained)."""
        return self.encode_features(texts).sentence

    def encode_features(self, texts: Sequence[str]) -> TextFeatures:
        """:meth:`encode` with the encoder's word features where it gives them."""
        encoder = self.stack.text_encoder
        if not encoder.can_encode_text:
            encoder.encode_text(list(texts))  # raises the encoder's own explanation
        with torch.no_grad():
            out = as_text_features(encoder.encode_text(list(texts)))
        return TextFeatures(out.sentence.to(self.device).float(),
                            None if out.words is None else out.words.to(self.device).float(),
                            None if out.mask is None else out.mask.to(self.device))

    def needed_fields(self) -> frozenset[str]:
        """The conditioning fields the caller must give (the stack's requested data fields)."""
        return self.stack.data_fields()

    def keypoint_count(self) -> int | None:
        """The number of parts the stack's keypoints have (from its components' ``example_fields``), or
        None where it takes no keypoints or does not say."""
        if KEYPOINTS not in self.needed_fields():
            return None
        from ganstack.build.stack import example_fields

        try:
            return int(example_fields(self.stack, 1)[KEYPOINTS].shape[-2])
        except (UserError, KeyError, IndexError):
            return None

    def _caption_fields(self, given: dict[str, Any] | None, count: int, features: TextFeatures | None
                        ) -> dict[str, Tensor]:
        """Per-caption fields: the given ones checked (one row per caption), and the words where requested."""
        given = dict(given or {})
        fields: dict[str, Tensor] = {}
        for name in sorted(self.needed_fields()):
            if name not in given:
                flag = FIELD_FLAGS.get(name, f"fields={{'{name}': ...}}")
                raise UserError(f"this run's stack needs the conditioning field '{name}' for every caption, and "
                                "none was given", path=FIELD_FLAGS.get(name),
                                fix=f"give {flag}" + (" (in Python: generate(..., fields={'" + name + "': ...}))"
                                                      if name in FIELD_FLAGS else ""))
            value = torch.as_tensor(np.asarray(given[name]) if not isinstance(given[name], Tensor) else given[name])
            if value.ndim == 0 or value.shape[0] != count:
                raise UserError(f"the field '{name}' has shape {tuple(value.shape)}: it needs one row per caption "
                                f"({count})", path=FIELD_FLAGS.get(name),
                                fix=f"give '{name}' with a first dimension of {count}")
            fields[name] = value.to(device=self.device, dtype=torch.float32 if value.is_floating_point()
                                    else value.dtype)
        if "words" in self.stack.requested_fields():
            if features is None or features.words is None:
                raise UserError("this run's stack reads word features, which stored embeddings do not have",
                                fix="draw from sentences (--text / --captions) with the run's own text encoder")
            fields["words"], fields["word_mask"] = features.words, features.mask
        return fields

    @torch.no_grad()
    def generate(self, texts: Sequence[str] | None = None, *, n: int = 1, seed: int = 0,
                 embeddings: Tensor | np.ndarray | None = None, z: Tensor | np.ndarray | None = None,
                 ca_eps: Sequence[Tensor | np.ndarray | None] | None = None,
                 fields: dict[str, Tensor | np.ndarray] | None = None) -> Samples:
        """``n`` images per sentence from every stage. Sample ``i`` of every caption draws its noise and
        its CA samples from seed ``seed + i`` alone, whatever else is in the batch.

        ``embeddings`` (one row per caption) replaces ``texts`` for encoders that cannot read new
        sentences (``precomputed``). ``z`` (``[captions * n, noise_dim]``, caption-major like the
        images) and ``ca_eps`` (one ``[captions * n, condition_dim]`` per stage, or None for a stage
        to keep its seeded draw) replace the seeded noise, to reproduce another implementation's
        images from the same noise. ``fields``: per-caption conditioning fields (``{"box": [N, 4]}``),
        required for those the stack requests (:meth:`needed_fields`).
        """
        features: TextFeatures | None = None
        if embeddings is not None:
            text = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32, device=self.device)
            captions = list(texts) if texts else [f"embedding {i}" for i in range(len(text))]
        else:
            captions = list(texts or [])
            if not captions:
                raise UserError("no text to draw from", fix="give --text \"a sentence\" or --captions FILE")
            features = self.encode_features(captions)
            text = features.sentence
        per_caption = self._caption_fields(fields, len(text), features)
        self._refuse_oversized(len(captions) * n, "--n")
        seeds = [seed + i for i in range(n)]
        given_z = z
        z, eps = self._noise(seeds)
        k = len(captions)
        z_all, eps_all = self._explicit_noise(z.repeat(k, 1), [e.repeat(k, 1) for e in eps], given_z, ca_eps)
        rows = {name: value.repeat_interleave(n, dim=0) for name, value in per_caption.items()}
        images, _ = self._draw(text.repeat_interleave(n, dim=0), z_all, eps_all, rows)
        return Samples(captions, n, seeds, images, _given(per_caption))

    def _refuse_oversized(self, rows: int, flag: str) -> None:
        """Refuse, before any noise is drawn, a request whose images alone would fill more than half the
        machine's memory (they are all returned at once)."""
        needed = rows * sum(3 * r * r * 4 for r in self.resolutions)
        available = host_memory()
        if available and needed > available // 2:
            raise UserError(f"{rows:,} images at {list(self.resolutions)} px would take {size_text(needed)} "
                            f"of memory, more than half of this machine's {size_text(available)}", path=flag,
                            fix=f"draw fewer at a time: lower {flag}; sample i uses seed SEED+i, so a later call "
                            "with a higher --seed continues the same series")

    def _draw(self, text: Tensor, z: Tensor, eps: list[Tensor],
              fields: dict[str, Tensor] | None = None) -> tuple[list[Tensor], bool]:
        """Every stage's images for these rows, :attr:`batch_size` rows at a time (each row's image depends
        on its own row alone, so the result is the one-batch result); and whether CA drew nothing."""
        per_stage: list[list[Tensor]] = [[] for _ in self.stack.stages]
        deterministic = True
        for start in range(0, len(text), self.batch_size):
            rows = slice(start, start + self.batch_size)
            outs = self.stack.generate(text[rows], z[rows], eps=[e[rows] for e in eps],
                                       fields={name: value[rows] for name, value in (fields or {}).items()})
            deterministic = deterministic and all(condition.logvar is None for condition, _out in outs)
            for images, (_condition, out) in zip(per_stage, outs, strict=True):
                images.append(out.image.float().cpu())
        return [torch.cat(images) for images in per_stage], deterministic

    def _explicit_noise(self, z: Tensor, eps: list[Tensor], given_z: Tensor | np.ndarray | None,
                        given_eps: Sequence[Tensor | np.ndarray | None] | None) -> tuple[Tensor, list[Tensor]]:
        """The seeded ``z``/``eps`` with the caller's explicit noise put in, each checked for its shape."""
        def take(value: Tensor | np.ndarray, like: Tensor, name: str) -> Tensor:
            tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
            if tuple(tensor.shape) != tuple(like.shape):
                raise UserError(f"{name} has shape {tuple(tensor.shape)}; this stack needs {tuple(like.shape)} "
                                "(one row per caption and sample, caption-major)",
                                fix=f"give {name} of shape {tuple(like.shape)}")
            return tensor.to(device=like.device, dtype=like.dtype)

        if given_z is not None:
            z = take(given_z, z, "z")
        if given_eps is not None:
            if len(given_eps) != len(eps):
                raise UserError(f"ca_eps has {len(given_eps)} entries for a stack of {len(eps)} stages",
                                fix="give one entry per stage (None keeps that stage's seeded draw)")
            eps = [e if g is None else take(g, e, f"ca_eps[{j}]")
                   for j, (e, g) in enumerate(zip(eps, given_eps, strict=True))]
        return z, eps

    def _noise(self, seeds: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
        """Noise z and each stage's CA noise, one row per seed, each row from its own seed."""
        zs, eps = [], []
        for s in seeds:
            gen = torch.Generator().manual_seed(s)
            zs.append(torch.randn(self.stack.noise_dim, generator=gen))
            eps.append([torch.randn(int(st.conditioner.out_dim), generator=gen) for st in self.stack.stages])
        per_stage = [torch.stack([e[j] for e in eps]).to(self.device) for j in range(len(self.stack.stages))]
        return torch.stack(zs).to(self.device), per_stage

    @torch.no_grad()
    def ca_variations(self, text: str, k: int, *, seed: int = 0,
                      fields: dict[str, Tensor | np.ndarray] | None = None) -> Samples:
        """Fixed noise and text, ``k`` Conditioning Augmentation samples (the paper's figure).

        A run whose conditioners all draw nothing (``linear``, ``identity``, ``none``) is refused:
        its ``k`` images would be identical. ``fields``: the caption's fields, one row (as :meth:`generate`).
        """
        self._refuse_oversized(k, "--ca-variations")
        features = self.encode_features([text])
        per_caption = self._caption_fields(fields, 1, features)
        emb = features.sentence.repeat(k, 1)
        z, _ = self._noise([seed])
        _, eps = self._noise([seed + 1 + i for i in range(k)])
        rows = {name: value.expand(k, *value.shape[1:]) for name, value in per_caption.items()}
        images, deterministic = self._draw(emb, z.expand(k, -1).contiguous(), eps, rows)
        if deterministic:
            names = ", ".join(sorted({s.conditioner.type for s in self.resolved.recipe.stages}))
            raise UserError(f"--ca-variations varies Conditioning Augmentation's samples, but this run's "
                            f"conditioners ({names}) are deterministic, so every image would be the same",
                            path="stages.conditioner",
                            fix="use a run trained with `conditioner: {type: ca}` (e.g. recipes/shapes_ca.yaml), "
                            "or vary the noise instead with --n K")
        return Samples([f"{text} (CA sample {i + 1})" for i in range(k)], 1, [seed] * k, images,
                       _given(per_caption))

    @torch.no_grad()
    def interpolate(self, text_a: str, text_b: str, steps: int, *, seed: int = 0,
                    fields: dict[str, Tensor | np.ndarray] | None = None) -> Samples:
        """Blend the condition from ``text_a`` to ``text_b`` with the noise fixed (CA at its mean).

        ``fields``: one row, held fixed along the blend. Word features (which do not blend: the two
        sentences' words differ in number) are the nearer sentence's."""
        self._refuse_oversized(steps, "--steps")
        features = self.encode_features([text_a, text_b])
        first = TextFeatures(*(None if t is None else t[:1] for t in features))
        per_caption = {n: v for n, v in self._caption_fields(fields, 1, first).items() if n not in WORD_FIELDS}
        a, b = features.sentence
        w = torch.linspace(0, 1, steps, device=self.device).unsqueeze(1)
        emb = (1 - w) * a + w * b
        rows = {name: value.expand(steps, *value.shape[1:]) for name, value in per_caption.items()}
        if "words" in self.stack.requested_fields():
            nearer = (w[:, 0] > 0.5).long()
            rows["words"], rows["word_mask"] = features.words[nearer], features.mask[nearer]
        z, _ = self._noise([seed])
        zero_eps = [torch.zeros(steps, int(s.conditioner.out_dim), device=self.device) for s in self.stack.stages]
        images, _ = self._draw(emb, z.expand(steps, -1).contiguous(), zero_eps, rows)
        labels = [f"{1 - float(t):.2f} x '{text_a}' + {float(t):.2f} x '{text_b}'" for t in w[:, 0]]
        return Samples(labels, 1, [seed] * steps, images, _given(per_caption))


FIELD_FLAGS = {BOX: "--box", KEYPOINTS: "--keypoints"}
"""The ``ganstack sample`` flag that gives each conditioning field."""


def _given(fields: dict[str, Tensor]) -> dict[str, Tensor]:
    """The caller's fields, without the encoder's word features (which are not the caller's to give)."""
    return {name: value.cpu() for name, value in fields.items() if name not in WORD_FIELDS}


def load(run_or_checkpoint: str | Path, *, device: str = "auto", ema: bool = True) -> TextToImage:
    """Load a run folder or checkpoint for drawing; uses the generator EMA when the run kept one."""
    ckpt = load_checkpoint(run_or_checkpoint)
    resolved = recipe_from_dict(checkpoint_recipe(ckpt), file=ckpt["path"], base_dir=ckpt.get("recipe_dir"))
    stack = build_stack(resolved, for_training=False)
    key = "ema" if ema and ckpt.get("ema") else "model"
    load_weights(stack, ckpt.get(key), file=ckpt["path"], key=key)
    target = resolve_device(device)
    return TextToImage(stack.to(target), resolved, target, checkpoint_step(ckpt))


def read_captions(path: Path) -> list[str]:
    """One caption per non-empty line (UTF-8)."""
    lines = read_text(path, what="captions file (--captions)",
                      fix="give --captions a UTF-8 text file with one caption per line").splitlines()
    captions = [line.strip() for line in lines if line.strip()]
    if not captions:
        raise UserError("the captions file (--captions) has no captions", file=str(path),
                        fix="write one caption per line")
    return captions


def read_embeddings(path: Path) -> np.ndarray:
    fix = "give --embeddings a .npy file of shape (captions, dim) saved with numpy.save"
    try:
        # mapped first: a header claiming more than the file holds is refused before anything is allocated
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"cannot read embeddings (--embeddings): {str(exc)[:200]}", file=str(path), fix=fix) from None
    if not isinstance(mapped, np.ndarray) or mapped.ndim != 2 or mapped.dtype.kind not in "fiu":
        raise UserError(f"embeddings must be a 2-D numeric array (captions, dim), got "
                        f"{getattr(mapped, 'dtype', type(mapped).__name__)} of shape {getattr(mapped, 'shape', '?')}",
                        file=str(path), fix=fix)
    arr = np.array(mapped, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise UserError("the embeddings hold NaN or infinite values", file=str(path), fix=fix)
    return arr


SHEET_ROWS = 100  # rows of contact_sheet.png; every image is in the PNGs and the manifest


def write_samples(samples: Samples, out_dir: Path, *, stages: str = "all",
                  resolutions: Sequence[int]) -> dict[str, Any]:
    """One PNG per caption, sample and stage, ``manifest.jsonl`` and ``contact_sheet.png``."""
    from ganstack.sample.images import contact_sheet, save_png, to_uint8
    from ganstack.sample.manifest import ManifestWriter

    ensure_dir(out_dir, fix="choose another --out")
    chosen = list(range(len(samples.images))) if stages == "all" else [len(samples.images) - 1]
    writer = ManifestWriter(out_dir)
    rows: list[str] = []
    boxes: list[list[float] | None] = []
    keypoints: list[list[list[float]] | None] = []
    for ci, caption in enumerate(samples.captions):
        given = {name: value[ci].tolist() for name, value in samples.fields.items()}  # recorded per image
        for si in range(samples.n):
            rows.append(caption if samples.n == 1 else f"{caption} [{si + 1}]")
            boxes.append(given.get(BOX))
            keypoints.append(given.get(KEYPOINTS))
            for k in chosen:
                rel = f"caption{ci:03d}_sample{si:02d}_stage{k + 1}.png"
                writer.add(to_uint8(samples.image(ci, si, k)), rel, caption=caption, index=si, stage=k + 1,
                           resolution=int(resolutions[k]), seed=samples.seeds[si], **given)
    manifest = writer.close()
    headers = [f"stage {k + 1} ({resolutions[k]}px)" for k in chosen]
    sheet = out_dir / "contact_sheet.png"
    shown = rows[:SHEET_ROWS]  # a sheet of 10,000 rows would be a picture of gigabytes no one opens
    save_png(contact_sheet(shown, [samples.images[k][:len(shown)] for k in chosen], headers=headers,
                           boxes=boxes[:len(shown)], keypoints=keypoints[:len(shown)]), sheet)
    return {"manifest": manifest, "contact_sheet": sheet, "images": len(rows) * len(chosen),
            "sheet_rows": len(shown)}
