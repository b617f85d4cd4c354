"""Training the DALL·E 3 captioner and writing captions with it.

The captioner reads an image through the image tower of the CLIP trained in `WORKDIR/clip`
(its weights start the captioner's `image_encoder` and are trained on with the captioning
loss, as the paper pretrains its captioner jointly with CLIP), then a captioning language
model (`models/captioner.py`).

Modes (`config.captioner.mode`), each trained into `WORKDIR/captioner_MODE`:
- `alt`: pretraining on the data set's own (alt-text) captions;
- `short`: fine-tuned from `alt` on the main subject only (`shapes.short_caption`);
- `descriptive`: fine-tuned from `alt` on captions naming every object, attribute and relation.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dalle_jax import viz
from dalle_jax.data import pipeline, shapes
from dalle_jax.eval.captions import FACTS, caption_quality
from dalle_jax.models import clip
from dalle_jax.models.captioner import Captioner, beam_search_captions, sample_captions
from dalle_jax.tasks.clip import TrainedClip
from dalle_jax.text.tokenizer import PAD_ID, TextTokenizer
from dalle_jax.train import trainer

MODES = ("alt", "short", "descriptive")


def image_encoder_parts(pooled: bool) -> tuple[str, ...]:
    """The CLIP parameters the captioner keeps: the image tower, its projection if it reads
    the pooled embedding, and the (unused, scalar) temperature that CLIP's `setup` asks for."""
    return ("vision", "image_projection", "logit_scale") if pooled else ("vision", "logit_scale")


def target_caption(example: dict, mode: str, image_size: int) -> str:
    """The caption a mode learns to write for an example. A data set of your own has one
    caption per image, which is its alt text."""
    if mode == "alt":
        return example["alt_text"] if "alt_text" in example else example["caption"]
    if mode == "short":
        return shapes.short_caption(shapes.Scene.from_features(example, image_size))
    if mode == "descriptive":
        return example["caption"]
    raise ValueError(f"captioner mode must be one of {MODES}, got {mode!r}")


def patch_grid_size(config, clip_config) -> int:
    """The side of the CLIP image tower's patch grid when the captioner marks patch
    coordinates (`captioner.patch_coordinates`, output tokens only); else 0."""
    if config.captioner.pooled_features or not config.captioner.patch_coordinates:
        return 0
    m = clip_config.model
    size = m.get("image_size", 0) or config.data.image_size
    return -(-size // m.patch_size)  # the patch convolution pads ("SAME")


def build_captioner(config, vocab_size: int, grid_size: int = 0) -> Captioner:
    m = config.captioner.model
    return Captioner(vocab_size=vocab_size, caption_length=config.text.max_length,
                     num_prefix=m.num_prefix, embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads,
                     head_dim=m.head_dim, mlp_dim=m.mlp_dim, grid_size=grid_size, dtype=jnp.dtype(m.dtype))


@dataclasses.dataclass(frozen=True, eq=False)
class CaptionerTask:
    model: Captioner
    clip_model: clip.CLIP
    clip_image_params: Any  # the trained CLIP's image tower and projection
    text_tokenizer: TextTokenizer
    config: Any
    workdir: pathlib.Path
    name: str

    @classmethod
    def from_config(cls, config, workdir: str | pathlib.Path) -> "CaptionerTask":
        """The captioner of `config` over the work dir's CLIP (captioning needs no data set)."""
        workdir = pathlib.Path(workdir)
        mode = config.captioner.mode
        if mode not in MODES:
            raise ValueError(f"captioner.mode must be one of {MODES}, got {mode!r}")
        trained_clip = TrainedClip.load(workdir)
        image_params = {k: trained_clip.params[k] for k in image_encoder_parts(config.captioner.pooled_features)}
        text_tokenizer = TextTokenizer.load(workdir)
        model = build_captioner(config, text_tokenizer.vocab_size, patch_grid_size(config, trained_clip.task.config))
        if pipeline.is_own_data(config.data) and mode != "alt":
            raise ValueError(f"captioner mode {mode!r} learns from the shapes data set's ground truth; on a data set "
                             "of your own, train mode 'alt' (its captions)")
        return cls(model, trained_clip.model, image_params, text_tokenizer, config, workdir, f"captioner_{mode}")

    @functools.cached_property
    def eval_examples(self) -> tuple[np.ndarray, list]:
        """(uint8 [n, H, W, 3] validation images, their ground-truth scenes) that `evaluate` scores,
        read on first use; none on a data set of your own, which has no ground truth."""
        if pipeline.is_own_data(self.config.data):
            return np.zeros((0,), np.uint8), []
        validation = pipeline.load_sources(self.config.data)["validation"]
        examples = [validation[i] for i in range(min(self.config.captioner.eval_images, len(validation)))]
        size = self.config.data.image_size
        return np.stack([e["image"] for e in examples]), [shapes.Scene.from_features(e, size) for e in examples]

    @property
    def mode(self) -> str:
        return self.config.captioner.mode

    def image_features(self, image_encoder_params, images):
        return self.clip_model.apply({"params": image_encoder_params}, images,
                                     pooled=self.config.captioner.pooled_features, method="image_features")

    # -- training ------------------------------------------------------------------------

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        del rng
        caption = target_caption(example, self.mode, self.config.data.image_size)
        return {"image": example["image"], "caption": self.text_tokenizer.encode(caption, self.config.text.max_length)}

    def init(self, rng: jax.Array, batch: dict) -> dict:
        features = jax.eval_shape(self.image_features, self.clip_image_params, batch["image"])
        variables = self.model.init(rng, jnp.zeros(features.shape, features.dtype), batch["caption"])
        image_encoder = self.clip_model.init(rng, batch["image"], method="image_features",
                                             pooled=self.config.captioner.pooled_features)["params"]
        image_encoder = {k: image_encoder[k] for k in self.clip_image_params}
        return {"params": {"captioner": variables["params"], "image_encoder": image_encoder}}

    def initial_params(self, params):
        """`alt` starts from the trained CLIP's image tower; the other modes from `captioner_alt`."""
        if self.mode == "alt":
            return {"captioner": params["captioner"], "image_encoder": self.clip_image_params}
        pretrained = self.workdir / "captioner_alt"
        if not (pretrained / "checkpoints").exists():
            raise FileNotFoundError(f"captioner mode {self.mode!r} fine-tunes {pretrained}; train mode 'alt' first")
        alt_config = ml_collections.ConfigDict(self.config.to_dict())
        alt_config.captioner.mode = "alt"
        return trainer.load_variables(alt_config, pretrained, dataclasses.replace(self, name="captioner_alt"))["params"]

    def token_losses(self, params, images, captions):
        """Per-token cross-entropy `[n, L]` of `captions` given `images`, the weights that keep
        every piece and the EOS but not the padding, and the logits `[n, L, vocab]`."""
        features = self.image_features(params["image_encoder"], images)
        logits = self.model.apply({"params": params["captioner"]}, features, captions)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, captions)
        return losses, (captions != PAD_ID).astype(jnp.float32), logits

    def loss_fn(self, params, batch: dict, rng: jax.Array, *, step, model_state):
        del rng, step
        losses, weights, logits = self.token_losses(params, batch["image"], batch["caption"])
        loss = jnp.sum(losses * weights) / jnp.sum(weights)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["caption"]) * weights) / jnp.sum(weights)
        return loss, {"token_accuracy": correct}, model_state

    def evaluate(self, params, model_state) -> dict[str, float]:
        """Recall of each kind of fact (and precision over all) in the captions of the
        validation examples, against the truth; logged every `train.eval_every` steps."""
        del model_state
        images, scenes = self.eval_examples
        if not scenes:  # no ground truth to score against
            return {}
        quality = caption_quality(self.caption(params, images, jax.random.key(self.config.seed)), scenes)
        return {**{f"{fact}_recall": quality[fact]["recall"] for fact in FACTS},
                "precision": quality["all"]["precision"]}

    def pictures(self, params, model_state) -> dict[str, np.ndarray]:
        """The first eight validation images with the captions the captioner writes for them."""
        del model_state
        images = np.stack([e["image"] for e in pipeline.first_examples(self.config.data, "validation")])
        captions = self.caption(params, images, jax.random.key(self.config.seed))
        return {"captions": viz.picture(images, captions, columns=4)}

    # -- captioning ----------------------------------------------------------------------

    @functools.cached_property
    def _decode(self):
        d = self.config.captioner.decode

        def decode(params, images, rng):
            features = self.image_features(params["image_encoder"], images)
            if d.beam_size > 1:
                return beam_search_captions(self.model, params["captioner"], features, beam_size=d.beam_size)[0]
            return sample_captions(self.model, params["captioner"], features, rng, temperature=d.temperature,
                                   top_p=d.top_p)

        return jax.jit(decode)

    def caption(self, params, images: np.ndarray, rng: jax.Array) -> list[str]:
        """Captions for `uint8 [n, H, W, 3]` images, decoded as `captioner.decode` says."""
        return self.text_tokenizer.decode(np.asarray(self._decode(params, images, rng)))

    @functools.cached_property
    def _log_likelihood(self):
        def log_likelihood(params, images, captions):
            losses, weights, _ = self.token_losses(params, images, captions)
            return -jnp.sum(losses * weights, axis=-1)

        return jax.jit(log_likelihood)

    def log_likelihood(self, params, images: np.ndarray, texts: list[str]) -> np.ndarray:
        """`float32 [n]`: log p(text | image) of each pair of `uint8 [n, H, W, 3]` images and
        texts, summed over the caption's pieces and its EOS (the tokens `loss_fn` scores)."""
        captions = self.text_tokenizer.encode(list(texts), self.config.text.max_length)
        return np.asarray(self._log_likelihood(params, jnp.asarray(images), captions))
