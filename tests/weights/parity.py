"""What the parity tests compare, shared by the fixture tests (no PyTorch) and the live ones
(`tests_convert/`, against PyTorch): the inputs, our outputs for them, and the tolerance.

Tolerance: float32 on the CPU, the largest difference relative to the largest reference value,
`relative_error(ours, reference) <= RTOL`.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.models import clip
from dalle_jax.weights import openai_dvae

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
RTOL = 1e-4

AWKWARD_TEXTS = [
    "a photo of a cat.",
    "",
    "   leading,   inner    and trailing   spaces   ",
    "UPPER lower MiXeD CaSe",
    "don't stop: it's the dog's bone, we'll see, they're here, I'd go, I've been, I'm",
    "café naïve façade crème brûlée Ångström",
    "“curly quotes”, ‘apostrophes’ — em dash – en dash … ellipsis",
    "emoji 🐱🚀 and a family 👩‍👩‍👧 and flags 🇫🇷",
    "tabs\tand\nnewlines\r\nand\u00a0no-break spaces",
    "numbers 12345, 3.14159 and 1,000,000",
    "punctuation!!! ??? ... ;;; (brackets) [more] {braces} <angles> @#$%^&*",
    "日本語のテキスト and 中文 and 한국어",
    "e-mail someone@example.com or visit https://example.com/a?b=c#d",
    "&amp; html &lt;entities&gt; stay as typed",
    "the text <|endoftext|> in the middle",
    " ".join(["a small red circle above a large blue square"] * 23),  # 207 words: truncated
]


def relative_error(ours, reference) -> float:
    """`max |ours - reference| / max |reference|`."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-12))


# -- the dVAE ----------------------------------------------------------------------------


def read_dvae_fixture(path: pathlib.Path) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
    """(released tensors, tokenizer settings, reference arrays) of an `openai_dvae.npz`."""
    with np.load(path) as data:
        tensors = {k.removeprefix("tensor/"): data[k] for k in data.files if k.startswith("tensor/")}
        reference = {k: data[k] for k in data.files if not k.startswith("tensor/") and k != "settings"}
        settings = json.loads(str(data["settings"]))
    return tensors, settings, reference


def dvae_outputs(params: dict, settings: dict, images: np.ndarray) -> dict[str, np.ndarray]:
    """Our dVAE on uint8 `images [batch, H, W, 3]`: code logits, argmax codes, the decoder's
    statistics of those codes and the decoded pixels in [0, 1] (NHWC, as the reference stores them)."""
    model = openai_dvae.build(settings)
    variables = {"params": params}
    logits = model.apply(variables, jnp.asarray(images), method="logits")
    codes = jnp.argmax(logits, -1)
    stats = model.apply(variables, codes, method=lambda m, c: m.decoder(c))
    pixels = model.apply(variables, codes, method="decode_unit")
    return {"logits": np.asarray(logits), "codes": np.asarray(codes), "stats": np.asarray(stats),
            "pixels": np.asarray(pixels)}


# -- CLIP --------------------------------------------------------------------------------


def clip_outputs(trained_clip, images: np.ndarray, token_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Our CLIP's normalised image and text embeddings and image-to-text logits."""
    model, params = trained_clip.model, trained_clip.params
    image_embeds, text_embeds, scale = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))(
        params, jnp.asarray(images), jnp.asarray(token_ids))
    logits = scale * image_embeds @ text_embeds.T
    return {"image_embeds": np.asarray(image_embeds), "text_embeds": np.asarray(text_embeds),
            "logits_per_image": np.asarray(logits)}


def clip_pixels(images: np.ndarray, image_size: int, mean, std) -> np.ndarray:
    """Our preprocessing, NCHW like `transformers`' pixel_values."""
    return np.asarray(clip.standardize_pixels(jnp.asarray(images), image_size, mean, std)).transpose(0, 3, 1, 2)
