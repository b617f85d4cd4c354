"""CLIP evaluation on shapes: zero-shot colour and shape classification, and retrieval recall.

Zero-shot classes are embedded through an ensemble of prompts, averaged and renormalised
(as in the CLIP paper): a colour through "a {size} {colour} {shape}" over every size and
shape, a shape over every size and colour. Single-object validation images are
classified by their nearest class. Retrieval ranks the validation captions for each image and the
images for each caption.
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


def class_embeddings(embed_text: EmbedText, names: Sequence[str], prompts_for: Callable[[str], list[str]]) -> np.ndarray:
    """`[len(names), dim]`: each class's prompt embeddings averaged and renormalised."""
    mean = np.stack([embed_text(prompts_for(name)).mean(axis=0) for name in names])
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def zero_shot_accuracy(image_embeddings: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> float:
    return float(np.mean(np.argmax(image_embeddings @ classes.T, axis=1) == labels))


def recall_at(similarity: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k of the diagonal in each row of a `[queries, candidates]` similarity matrix."""
    rank = np.sum(similarity > np.diag(similarity)[:, None], axis=1)  # how many candidates beat the match
    return {f"recall@{k}": float(np.mean(rank < k)) for k in ks}


def evaluate_clip(embed_images: Callable[[np.ndarray], np.ndarray], embed_text: EmbedText, examples: Sequence[dict],
                  ) -> dict[str, float]:
    """Zero-shot colour/shape accuracy on single-object examples; recall both ways on all."""
    images = np.stack([e["image"] for e in examples])
    image_emb = embed_images(images)
    text_emb = embed_text([e["caption"] for e in examples])
    single = np.array([int(e["num_objects"]) == 1 for e in examples])
    colours = np.array([int(e["colours"][0]) for e in examples])
    shape_ids = np.array([int(e["shapes"][0]) for e in examples])
    similarity = image_emb @ text_emb.T
    return {
        "zero_shot_colour": zero_shot_accuracy(image_emb[single], colours[single],
                                               class_embeddings(embed_text, shapes.COLOUR_NAMES, colour_prompts)),
        "zero_shot_shape": zero_shot_accuracy(image_emb[single], shape_ids[single],
                                              class_embeddings(embed_text, shapes.SHAPES, shape_prompts)),
        **{f"image_to_text_{k}": v for k, v in recall_at(similarity).items()},
        **{f"text_to_image_{k}": v for k, v in recall_at(similarity.T).items()},
        "num_examples": len(examples), "num_single_object": int(single.sum()),
    }
