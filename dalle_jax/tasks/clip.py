"""Training CLIP on image–caption pairs with the symmetric InfoNCE loss over the global batch.

Needs the run's text tokenizer (`WORKDIR/text_tokenizer.model`); trains into `WORKDIR/clip`.
`WORKDIR/clip` may instead hold OpenAI's CLIP, imported by `run.py import-weights --kind
hf-clip` (`model.architecture = "openai"`, its own tokenizer files beside the weights); every
later stage uses whichever is there.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.data import pipeline
from dalle_jax.data.cache import cached_rows
from dalle_jax.eval import clip_metrics
from dalle_jax.models import clip
from dalle_jax.text.clip_tokenizer import ClipTokenizer
from dalle_jax.text.tokenizer import TextTokenizer
from dalle_jax.train import partitioning, trainer

TOWER_SIZES = ("embed_dim", "depth", "num_heads", "head_dim", "mlp_dim")


def _tower_sizes(m, tower: str) -> dict:
    """A tower's sizes: `model.TOWER` where it gives them (OpenAI's towers differ in width), else
    the sizes both towers share."""
    own = m.get(tower) or {}
    return {k: own[k] if k in own else m[k] for k in TOWER_SIZES}


def is_openai(config) -> bool:
    return config.model.get("architecture", "dalle_jax") == "openai"


def build_clip(config, text_tokenizer: TextTokenizer | ClipTokenizer) -> clip.CLIP:
    m = config.model
    dtype = jnp.dtype(m.dtype)
    attention_impl = m.get("attention_impl", "auto")  # absent from runs saved before it
    text_options, vision_options = {}, {}
    vocab_size = text_tokenizer.vocab_size
    if is_openai(config):
        vocab_size = config.text.vocab_size  # the released embedding table's rows
        shared = dict(attention_bias=True, activation=m.activation, norm_eps=m.norm_eps)
        text_options = dict(shared, eos_id=text_tokenizer.eos_id)
        vision_options = dict(shared, pixel_mean=tuple(m.pixel_mean), pixel_std=tuple(m.pixel_std), pre_norm=True,
                              patch_bias=False)
    return clip.CLIP(
        clip.TextEncoder(vocab_size=vocab_size, length=config.text.max_length, dtype=dtype, attention_impl=attention_impl,
                         **_tower_sizes(m, "text_tower"), **text_options),
        # `.get`: CLIP runs saved before these options existed read back as before.
        clip.VisionEncoder(patch_size=m.patch_size, pooling=m.pooling, stem_channels=tuple(m.get("stem_channels", ())),
                           patch_kernel=m.get("patch_kernel", 0), image_size=m.get("image_size", 0), dtype=dtype,
                           attention_impl=attention_impl,
                           **_tower_sizes(m, "vision_tower"), **vision_options),
        projection_dim=m.projection_dim)


@dataclasses.dataclass(frozen=True, eq=False)
class ClipTask:
    model: clip.CLIP
    text_tokenizer: TextTokenizer | ClipTokenizer
    config: Any
    name: str = "clip"

    @classmethod
    def from_config(cls, config, workdir: str | pathlib.Path) -> "ClipTask":
        """The CLIP of `config`: with the work dir's text tokenizer, or for OpenAI's architecture
        with the tokenizer imported beside its weights (`WORKDIR/clip`)."""
        workdir = pathlib.Path(workdir)
        text_tokenizer = ClipTokenizer.load(workdir / cls.name) if is_openai(config) else TextTokenizer.load(workdir)
        return cls(build_clip(config, text_tokenizer), text_tokenizer, config)

    @functools.cached_property
    def eval_examples(self) -> list[dict]:
        """The validation examples `evaluate` scores, read on first use (embedding needs no data set)."""
        validation = pipeline.load_sources(self.config.data)["validation"]
        return [validation[i] for i in range(min(self.config.eval.num_examples, len(validation)))]

    @functools.cached_property
    def _encoders(self):
        """Jitted `(params, images)` and `(params, tokens)` encoders, compiled once per task."""
        return (jax.jit(lambda p, x: self.model.apply({"params": p}, x, method="encode_image")),
                jax.jit(lambda p, t: self.model.apply({"params": p}, t, method="encode_text")))

    def embedders(self, params, batch_size: int = 256):
        """(embed_images, embed_text): host functions to normalised `[n, dim]` numpy arrays."""
        image_fn, text_fn = self._encoders

        def batched(fn, inputs):
            return np.concatenate([np.asarray(fn(params, inputs[i: i + batch_size]))
                                   for i in range(0, len(inputs), batch_size)])

        embed_images = lambda images: batched(image_fn, np.asarray(images))
        embed_text = lambda texts: batched(text_fn, self.text_tokenizer.encode(list(texts), self.config.text.max_length))
        return embed_images, embed_text

    def evaluate(self, params, model_state) -> dict[str, float]:
        """Zero-shot colour/shape accuracy and retrieval recall on validation examples."""
        del model_state
        return clip_metrics.evaluate_clip(*self.embedders(params), self.eval_examples)

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        del rng
        return {"image": example["image"],
                "text": self.text_tokenizer.encode(example[self.config.text.caption_field], self.config.text.max_length)}

    def init(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, batch["image"], batch["text"])

    def loss_fn(self, params, batch: dict, rng: jax.Array, *, step, model_state):
        del rng, step
        image_emb, text_emb, scale = self.model.apply({"params": params}, batch["image"], batch["text"])
        loss = clip.contrastive_loss(image_emb, text_emb, scale)
        matches = jnp.argmax(image_emb @ text_emb.T, axis=1) == jnp.arange(image_emb.shape[0])
        return loss, {"batch_image_to_text_accuracy": matches.mean(), "logit_scale": scale}, model_state


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedClip:
    """The CLIP trained (or imported) in `WORKDIR/clip`, as later stages use it (captioner,
    unCLIP, reranking)."""

    task: ClipTask
    params: Any
    step: int  # 0 for imported weights
    workdir: pathlib.Path

    @classmethod
    def load(cls, workdir: str | pathlib.Path) -> "TrainedClip":
        workdir = pathlib.Path(workdir)
        config = trainer.run_config(workdir / "clip", f"; run `python run.py train-clip --workdir {workdir}` or "
                                                      "`import-weights --kind hf-clip` first")
        task = ClipTask.from_config(config, workdir)
        step = trainer.trained_step(workdir / "clip")
        return cls(task, trainer.load_variables(config, workdir / "clip", task)["params"], step, workdir)

    @property
    def model(self) -> clip.CLIP:
        return self.task.model

    def embedders(self, batch_size: int = 256):
        """(embed_images, embed_text): see `ClipTask.embedders`."""
        return self.task.embedders(self.params, batch_size)

    def cached_embeddings(self, split: str, source, what: str) -> np.ndarray:
        """`float32 [len(source), P]` normalised embeddings of a split's `image`s, or of its
        captions if `what` names a caption feature; computed once per CLIP checkpoint."""
        path = (self.workdir / "clip_embeddings" / f"{split}_{what}_n{len(source)}_clip_step{self.step}.npy")
        embed_images, embed_text = self.task.embedders(partitioning.host_local(self.params))  # chunks by process

        def compute(begin: int, end: int) -> np.ndarray:
            examples = [source[i] for i in range(begin, end)]
            embeddings = (embed_images(np.stack([e["image"] for e in examples])) if what == "image"
                          else embed_text([e[what] for e in examples]))
            return embeddings.astype(np.float32)

        return cached_rows(path, len(source), compute, desc=f"CLIP-embed {split} {what}",
                           unit="image" if what == "image" else "caption")
