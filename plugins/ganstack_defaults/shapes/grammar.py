"""The grammar of the shapes captions: many sentence shapes, some of them held out from training.

A caption says what a scene holds (the shape, its colour, the background colour, and maybe the
size and position) in one of many *sentence shapes* (:data:`FRAMES`): clause orders, relative
clauses, lists, fronted phrases, an imperative, key-value lists. Each frame is filled from phrase
variants (which preposition, which verb, optional words, "a" or "one"), then given a case and a
final punctuation mark, so one scene has thousands of wordings.

The frames listed in :data:`HELDOUT_FRAMES` never occur in the ``train`` split: the ``test`` and
``holdout`` splits use them for the wordings a model has never read (``unseen_wording`` in the
``shapes-alignment`` metric). They are built from the same words as the training frames, so what is
new to a model is the arrangement, not a word: the question is whether a text encoder follows
meaning or memorises templates.

The attribute words are always the dataset's own (the palette's colour names, ``circle``,
``square``, ``triangle``, ``small``, ``large``, the five positions, a corner's two words sometimes
joined by a hyphen), and no other word of a caption is one of them, so a caption's meaning stays
checkable. Every choice comes from :class:`Choices`, a SHA-256 stream of its key, so a caption is a
pure function of that key.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence

import attrs

_GROUP = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")


class Choices:
    """A deterministic stream of choices: the ``n``-th draw hashes ``key`` and ``n``."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._count = 0

    def number(self) -> int:
        digest = hashlib.sha256(f"{self._key}#{self._count}".encode()).digest()
        self._count += 1
        return int.from_bytes(digest[:8], "big")

    def pick(self, options: Sequence[str], weights: Sequence[int] | None = None) -> str:
        """One of ``options``; ``weights`` (whole numbers) make some likelier."""
        weights = weights or [1] * len(options)
        ticket = self.number() % sum(weights)
        for option, weight in zip(options, weights, strict=True):
            if ticket < weight:
                return option
            ticket -= weight
        raise AssertionError("unreachable")

    def chance(self, numerator: int, denominator: int) -> bool:
        return self.number() % denominator < numerator


@attrs.frozen
class Frame:
    """One sentence shape: a template of slots; a ``[...]`` group drops out with any attribute it needs."""

    name: str
    template: str

    def needs(self) -> frozenset[str]:
        """Attributes (``size``, ``position``) the frame cannot leave out."""
        return _needs(self.template)


@functools.cache
def _needs(template: str) -> frozenset[str]:
    outside = _GROUP.sub("", template)
    return frozenset(a for slot in _SLOT.findall(outside) for a in _SLOT_NEEDS.get(slot, ()))


# Slots that exist only when an attribute is named; {S} and {SCL} carry the size when it is named.
_SLOT_NEEDS: dict[str, tuple[str, ...]] = {"P": ("position",), "p": ("position",), "z": ("size",)}

FRAMES: tuple[Frame, ...] = (
    Frame("noun-position-background", "{S}[ {P}] {B}"),
    Frame("noun-background-position", "{S} {B}[ {P}]"),
    Frame("there-is", "[{P} ]{THERE} {S} {B}"),
    Frame("background-with", "{BNP} with {S}[ {P}]"),
    Frame("there-is-then-background", "{THERE} {S}[ {P}]. {BCL}"),
    Frame("two-clauses", "{SCL}[ and {PCL}] and {BCL}"),
    Frame("picture-of", "{PIC} {S}[ {P}] {B}"),
    Frame("verb", "{S} {VERB}[ {P}] {B}"),
    Frame("of-a-picture", "{S} {P} of {BPIC}"),
    Frame("imperative", "{DRAW} {S}[ {P}] {B}"),
    Frame("list", "[{z} ]{c} {s}, {b} background[, {p}]"),
    Frame("background-first-sentence", "{BCL}. [{P} ]{THERE} {S}"),
    Frame("key-value", "shape: {s}, {COLOUR}: {c}, background: {b}[, size: {z}][, position: {p}]"),
    Frame("background-behind", "{BNP} behind {S}[ {P}]"),
    Frame("comma-background", "{S}, {B}[, {P}]"),
    # Held out of training (HELDOUT_FRAMES):
    Frame("fronted-background", "{BF}, {S}[ {P}]"),
    Frame("background-relative", "the background, which is {b}, is behind {S}[ {P}]"),
    Frame("colour-of", "{c} is the {COLOUR} of the[ {z}] {s}[ {P}], and {b} is the {COLOUR} of the background"),
    Frame("list-background-first", "{b} background, [{z} ]{c} {s}[, {p}]"),
    Frame("background-then-place", "{BCL}, and {S} is {P}"),
    Frame("with-behind-it", "{S}[ {P}] with {BBG} behind it"),
    Frame("background-colon", "{BNP}: {S}[ {P}]"),
    Frame("colour-then-with", "{b}, with {S}[ {P}]"),
)
HELDOUT_FRAMES: frozenset[str] = frozenset(f.name for f in FRAMES[15:])
SEEN_FRAMES: tuple[Frame, ...] = tuple(f for f in FRAMES if f.name not in HELDOUT_FRAMES)
UNSEEN_FRAMES: tuple[Frame, ...] = tuple(f for f in FRAMES if f.name in HELDOUT_FRAMES)



@functools.cache
def frames_naming(include: frozenset[str], wording: str) -> tuple[Frame, ...]:
    """The frames of a ``seen``/``unseen``/``any`` wording that can name just ``include`` (and shape, colours)."""
    frames = {"seen": SEEN_FRAMES, "unseen": UNSEEN_FRAMES, "any": FRAMES}[wording]
    return tuple(f for f in frames if f.needs() <= include)


def _shape_np(ch: Choices, a: dict[str, str], size: bool) -> str:
    """The shape with its colour (and size), as a noun phrase with its article."""
    det = ch.pick(["a", "one"], [5, 1])
    z, c, s = a["size"], a["color"], a["shape"]
    if not size:
        return ch.pick([f"{det} {c} {s}", f"{det} {s} that is {c}", f"{det} {s} which is {c}",
                        f"{det} {s} coloured {c}", f"{det} {s} colored {c}"], [6, 1, 1, 1, 1])
    return ch.pick([f"{det} {z} {c} {s}", f"{det} {z} {s} that is {c}", f"{det} {z} {s} which is {c}",
                    f"{det} {z} {s} coloured {c}", f"{det} {c} {s} that is {z}", f"{det} {c} {s} which is {z}"],
                   [8, 1, 1, 1, 1, 1])


def _shape_clause(ch: Choices, a: dict[str, str], size: bool) -> str:
    z, c, s = a["size"], a["color"], a["shape"]
    if not size:
        return ch.pick([f"the {s} is {c}", f"the {s} is coloured {c}"], [3, 1])
    return ch.pick([f"the {z} {s} is {c}", f"the {s} is {z} and {c}", f"the {s} is {c} and {z}"])


def _position(ch: Choices, p: str) -> str:
    """Where the shape is, as a prepositional phrase."""
    if p == "center":
        return ch.pick(["in the center", "at the center", "in the center of the picture", "right in the center",
                        "in the very center", "in the center of the image"], [4, 2, 2, 1, 1, 1])
    word = ch.pick([p, p.replace(" ", "-")], [4, 1])
    return ch.pick([f"in the {word}", f"at the {word}", f"in the {word} corner", f"in the {word} of the picture",
                    f"towards the {word}", f"near the {word}", f"in the {word} of the image"],
                   [4, 2, 2, 1, 1, 1, 1])


def _slots(ch: Choices, a: dict[str, str], size: bool) -> dict[str, Callable[[], str]]:
    b = a["background"]
    return {
        "S": lambda: _shape_np(ch, a, size),
        "SCL": lambda: _shape_clause(ch, a, size),
        "P": lambda: _position(ch, a["position"]),
        "PCL": lambda: ch.pick(["it is", "it sits", "it lies"]) + " " + _position(ch, a["position"]),
        "B": lambda: ch.pick([f"on a {b} background", f"against a {b} background", f"over a {b} background",
                              f"on {b}", f"against {b}", f"on a background of {b}",
                              f"in front of a {b} background", f"on a plain {b} background",
                              f"with a {b} background", f"on a background that is {b}", f"with {b} behind it",
                              f"on a {b} backdrop"], [6, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1]),
        "BF": lambda: ch.pick([f"on a {b} background", f"against a {b} background", f"over a {b} background",
                               f"on {b}", f"against {b}", f"on a plain {b} background", f"on a {b} backdrop",
                               f"in front of a {b} background"], [4, 2, 1, 1, 1, 1, 1, 1]),
        "BNP": lambda: ch.pick([f"a {b} background", f"a plain {b} background", f"a {b} backdrop",
                                f"a {b} picture", f"a {b} image", f"a {b} canvas"], [5, 1, 1, 2, 1, 1]),
        "BBG": lambda: ch.pick([f"a {b} background", f"a plain {b} background", f"a {b} backdrop"], [4, 1, 1]),
        "BPIC": lambda: ch.pick([f"a {b} picture", f"a {b} image", f"a {b} canvas"], [3, 2, 1]),
        "BCL": lambda: ch.pick([f"the background is {b}", f"the background colour is {b}",
                                f"the background color is {b}", f"the backdrop is {b}", f"everything else is {b}",
                                f"the rest of the picture is {b}", f"the background is plain {b}"],
                               [6, 1, 1, 1, 1, 1, 1]),
        "THERE": lambda: ch.pick(["there is", "there's"], [3, 1]),
        "PIC": lambda: ch.pick(["a picture of", "an image of", "a drawing of", "a photo of"]),
        "VERB": lambda: ch.pick(["sits", "is", "lies", "appears", "is drawn", "is shown"]),
        "DRAW": lambda: ch.pick(["draw", "paint", "show", "make"], [3, 1, 1, 1]),
        "COLOUR": lambda: ch.pick(["colour", "color"]),
        "c": lambda: a["color"], "s": lambda: a["shape"], "b": lambda: b, "z": lambda: a["size"],
        "p": lambda: ch.pick([a["position"], a["position"].replace(" ", "-")], [4, 1]),
    }


def _with_articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _finish(ch: Choices, text: str) -> str:
    """Case and final punctuation, as people type them."""
    text = _with_articles(text)
    text += ch.pick(["", ".", "!"], [6, 5, 1])
    case = ch.pick(["lower", "sentence", "upper"], [10, 9, 1])
    if case == "sentence":
        return re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return text.upper() if case == "upper" else text


def describe(frame: Frame, attributes: dict[str, str], include: frozenset[str], choices: Choices) -> str:
    """The caption of ``attributes`` in ``frame``, naming ``size``/``position`` where ``include`` has them.

    Shape, colour and background are always named. Raises ``ValueError`` if ``frame`` needs an
    attribute that ``include`` leaves out.
    """
    missing = frame.needs() - include
    if missing:
        raise ValueError(f"frame '{frame.name}' must name {', '.join(sorted(missing))}")
    slots = _slots(choices, attributes, "size" in include)

    def keep(group: re.Match[str]) -> str:
        needs = {a for slot in _SLOT.findall(group.group(1)) for a in _SLOT_NEEDS.get(slot, ())}
        return group.group(1) if needs <= include else ""

    text = _GROUP.sub(keep, frame.template)
    return _finish(choices, _SLOT.sub(lambda m: slots[m.group(1)](), text))
