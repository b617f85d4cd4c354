"""Reranking generated candidates by CLIP similarity to their prompt (DALL·E, section 2.5)."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from dalle_jax.models.pixels import to_uint8, to_unit_range

EmbedImages = Callable[[np.ndarray], np.ndarray]  # uint8 [n, H, W, 3] -> normalised [n, dim]
EmbedText = Callable[[list[str]], np.ndarray]  # n prompts -> normalised [n, dim]


def similarities(candidates: np.ndarray, prompts: list[str], embed_images: EmbedImages,
                 embed_text: EmbedText) -> np.ndarray:
    """CLIP's cosine between each candidate and its prompt: `[num_prompts, num_candidates]` for
    `uint8 [num_prompts, num_candidates, H, W, 3]` candidates."""
    num_prompts, num_candidates = candidates.shape[:2]
    images = embed_images(candidates.reshape(-1, *candidates.shape[2:])).reshape(num_prompts, num_candidates, -1)
    return np.einsum("pnd,pd->pn", images, embed_text(prompts))


def rerank(candidates: np.ndarray, prompts: list[str], embed_images: EmbedImages, embed_text: EmbedText,
           keep: int) -> tuple[np.ndarray, np.ndarray]:
    """The `keep` candidates most similar to each prompt, best first.

    Args:
      candidates: `uint8 [num_prompts, num_candidates, H, W, 3]`.
    Returns:
      (`[num_prompts, keep, H, W, 3]` images, `[num_prompts, keep]` cosine similarities).
    """
    num_candidates = candidates.shape[1]
    if not 1 <= keep <= num_candidates:
        raise ValueError(f"keep must be between 1 and the {num_candidates} candidates, got {keep}")
    similarity = similarities(candidates, prompts, embed_images, embed_text)
    best = np.argsort(-similarity, axis=1, kind="stable")[:, :keep]
    return (np.take_along_axis(candidates, best[:, :, None, None, None], axis=1),
            np.take_along_axis(similarity, best, axis=1))


def best_of_candidates(images, prompts: list[str], embed_images: EmbedImages, embed_text: EmbedText):
    """Of each prompt's run of consecutive rows of `images` (`float [len(prompts) * candidates, H,
    W, 3]` in [-1, 1], a diffusion stage's draws), the one CLIP puts nearest the prompt:
    `float [len(prompts), H, W, 3]`, quantised to 8 bits as CLIP saw it."""
    candidates = np.asarray(to_uint8(images)).reshape(len(prompts), -1, *images.shape[1:])
    return to_unit_range(jnp.asarray(rerank(candidates, list(prompts), embed_images, embed_text, keep=1)[0][:, 0]))


def clip_scores(images: np.ndarray, prompts: list[str], embed_images: EmbedImages, embed_text: EmbedText) -> np.ndarray:
    """CLIP score, 100 x max(cosine, 0), of each image against its prompt: `[n]`."""
    return 100.0 * np.maximum(np.sum(embed_images(images) * embed_text(prompts), axis=-1), 0.0)
