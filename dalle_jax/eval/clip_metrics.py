"""CLIP evaluation on shapes: zero-shot colour and shape classification, and retrieval recall.

Zero-shot classes are described by every prompt "a {size} {colour} {shape}" that names them,
the other attributes enumerated. A class scores its best-matching prompt, so the image's nearest
full description decides. The CLIP paper's ensemble, the prompts averaged into one renormalised
class embedding, is reported beside it (`*_prompt_mean`): averaging over colours blurs shapes,
because colour dominates these text embeddings (docs/dalle1.md, "CLIP and reranking"). Single-object
validation images are classified. Retrieval ranks the validation captions for each image and
the images for each caption.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from dalle_jax.data import shapes


EmbedText = Callable[[list[str]], np.ndarray]  # normalised [n, dim]


def colour_prompts(colour: str) -> list[str]:
    return [f"a {size} {colour} {shape}" for size in shapes.SIZES for shape in shapes.SHAPES]


def shape_prompts(shape: str) -> list[str]:
    return [f"a {size} {colour} {shape}" for size in shapes.SIZES for colour in shapes.COLOUR_NAMES]


def prompt_embeddings(embed_text: EmbedText, names: Sequence[str], prompts_for: Callable[[str], list[str]]
                      ) -> np.ndarray:
    """`[len(names), prompts, dim]`: every class's prompts, embedded."""
    return np.stack([embed_text(prompts_for(name)) for name in names])


def zero_shot_predictions(image_embeddings: np.ndarray, prompts: np.ndarray, reduce: str = "best") -> np.ndarray:
    """The class index of each image, from `[classes, prompts, dim]` prompt embeddings.

    "best": a class scores its best-matching prompt; "mean": its prompts' mean, renormalised.
    """
    if reduce == "best":
        scores = np.einsum("nd,cpd->ncp", image_embeddings, prompts).max(axis=-1)
    elif reduce == "mean":
        mean = prompts.mean(axis=1)
        scores = image_embeddings @ (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).T
    else:
        raise ValueError(f"reduce must be 'best' or 'mean', got {reduce!r}")
    return np.argmax(scores, axis=1)


def recall_at(similarity: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k of the diagonal in each row of a `[queries, candidates]` similarity matrix."""
    rank = np.sum(similarity > np.diag(similarity)[:, None], axis=1)  # how many candidates beat the match
    return {f"recall@{k}": float(np.mean(rank < k)) for k in ks}


def evaluate_clip(embed_images: Callable[[np.ndarray], np.ndarray], embed_text: EmbedText, examples: Sequence[dict],
                  ) -> dict[str, float]:
    """Zero-shot colour/shape accuracy on single-object examples (shapes only); recall both ways on all."""
    images = np.stack([e["image"] for e in examples])
    image_emb = embed_images(images)
    text_emb = embed_text([e["caption"] for e in examples])
    similarity = image_emb @ text_emb.T
    retrieval = {**{f"image_to_text_{k}": v for k, v in recall_at(similarity).items()},
                 **{f"text_to_image_{k}": v for k, v in recall_at(similarity.T).items()},
                 "num_examples": len(examples)}
    if "num_objects" not in examples[0]:  # a data set of your own: no classes to name
        return retrieval
    single = np.array([int(e["num_objects"]) == 1 for e in examples])
    colours = np.array([int(e["colours"][0]) for e in examples])
    shape_ids = np.array([int(e["shapes"][0]) for e in examples])
    zero_shot = {}
    for name, labels, names, prompts_for in (("colour", colours, shapes.COLOUR_NAMES, colour_prompts),
                                             ("shape", shape_ids, shapes.SHAPES, shape_prompts)):
        classes = prompt_embeddings(embed_text, names, prompts_for)
        for reduce, suffix in (("best", ""), ("mean", "_prompt_mean")):
            predictions = zero_shot_predictions(image_emb[single], classes, reduce)
            zero_shot[f"zero_shot_{name}{suffix}"] = float(np.mean(predictions == labels[single]))
    return {**zero_shot, **retrieval, "num_single_object": int(single.sum())}
