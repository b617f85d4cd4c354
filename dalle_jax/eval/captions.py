"""Caption quality on shapes: captions parsed back into facts and compared with the truth.

A caption is read as a list of object mentions (`[size] [colour] shape`, or `something
colour`) and at most one relation between the first two mentions. Its facts are, per
attribute, the multiset of values it states (`colour`, `shape`, `size`), the full objects it
names (`object`: size, colour and shape all stated), and the relation (as `(a, relation, b)`
over colour+shape, either order). The scene's facts are the same over its true objects.
Precision is the share of stated facts that are true; recall, the share of true facts stated.
"""

from __future__ import annotations

import collections
import re
from typing import Sequence

from dalle_jax.data import shapes

FACTS: tuple[str, ...] = ("colour", "shape", "size", "object", "relation")

_WORD = {**{c: "colour" for c in shapes.COLOUR_NAMES}, **{s: "shape" for s in shapes.SHAPES},
         **{s: "size" for s in shapes.SIZES}}
_RELATIONS = sorted(((phrase, name) for name, phrase in shapes.RELATION_PHRASES.items()), key=lambda p: -len(p[0]))


def parse_caption(text: str) -> tuple[list[dict[str, str]], str | None]:
    """`(mentions, relation)`: each mention a dict of the attributes it states; `relation`
    (a key of `shapes.RELATION_PHRASES`) between the first two mentions, if said between them."""
    text = text.lower()
    relation_at = []
    for phrase, name in _RELATIONS:
        for match in re.finditer(rf"\b{phrase}\b", text):
            relation_at.append((match.start(), name))
            text = text[: match.start()] + " " * len(phrase) + text[match.end():]  # not read again
    mentions, starts, current = [], [], {}

    def flush():
        nonlocal current
        if current:
            mentions.append(current)
        current = {}

    for match in re.finditer(r"[a-z]+", text):
        kind = _WORD.get(match.group())
        if kind is None or kind in current:  # a word that is no attribute, or a repeated one, ends a mention
            flush()
        if kind is None:
            continue
        if not current:
            starts.append(match.start())
        current[kind] = match.group()
        if kind == "shape":  # a shape closes its noun phrase
            flush()
    flush()
    relation = None
    if len(mentions) >= 2 and relation_at:
        position, name = min(relation_at)
        relation = name if starts[0] < position < starts[1] else None
    return mentions, relation


def _scene_facts(scene: shapes.Scene) -> dict[str, collections.Counter]:
    objects = scene.objects
    facts = {"colour": collections.Counter(o.colour for o in objects),
             "shape": collections.Counter(o.shape for o in objects),
             "size": collections.Counter(o.size for o in objects),
             "object": collections.Counter((o.size, o.colour, o.shape) for o in objects),
             "relation": collections.Counter()}
    if scene.relation is not None:
        a, b = objects
        facts["relation"][_relation_fact((a.colour, a.shape), scene.relation, (b.colour, b.shape))] += 1
    return facts


def _relation_fact(a, relation: str, b):
    """The same fact whichever object is named first."""
    return min((a, relation, b), (b, shapes.INVERSE_RELATION[relation], a))


def _caption_facts(text: str) -> dict[str, collections.Counter]:
    mentions, relation = parse_caption(text)
    facts = {name: collections.Counter() for name in FACTS}
    for mention in mentions:
        for attribute in ("colour", "shape", "size"):
            if attribute in mention:
                facts[attribute][mention[attribute]] += 1
        if len(mention) == 3:
            facts["object"][(mention["size"], mention["colour"], mention["shape"])] += 1
    if relation is not None and all({"colour", "shape"} <= set(m) for m in mentions[:2]):
        a, b = ((m["colour"], m["shape"]) for m in mentions[:2])
        facts["relation"][_relation_fact(a, relation, b)] += 1
    return facts


def caption_quality(captions: Sequence[str], scenes: Sequence[shapes.Scene]) -> dict[str, dict[str, float]]:
    """Precision and recall per fact kind and over all facts, pooled over the captions."""
    counts = {name: collections.Counter() for name in (*FACTS, "all")}
    for text, scene in zip(captions, scenes, strict=True):
        stated, true = _caption_facts(text), _scene_facts(scene)
        for name in FACTS:
            hits = sum((stated[name] & true[name]).values())
            for key, value in (("hits", hits), ("stated", sum(stated[name].values())),
                               ("true", sum(true[name].values()))):
                counts[name][key] += value
                counts["all"][key] += value
    return {name: {"precision": c["hits"] / c["stated"] if c["stated"] else 0.0,
                   "recall": c["hits"] / c["true"] if c["true"] else 0.0,
                   "stated": c["stated"], "true": c["true"]} for name, c in counts.items()}
