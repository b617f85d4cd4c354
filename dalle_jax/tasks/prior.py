"""Training and sampling unCLIP's priors (`models/prior.py`): caption → CLIP image embedding.

Both need the CLIP in `WORKDIR/clip` and the run's text tokenizer; the training images and
captions are CLIP-embedded once (cached under `WORKDIR/clip_embeddings/`). The caption and
its CLIP text embedding are dropped together with probability `prior.caption_dropout`
(empty caption, zero embedding): what classifier-free guidance samples against.

- `diffusion` (`WORKDIR/prior_diffusion`): the transformer predicts the unnoised
  embedding, scaled by `sqrt(P)` so that its coordinates have about unit variance. Sampling
  draws `num_candidates` per caption and keeps the one with the highest dot product with
  the text embedding (the paper's 2).
- `autoregressive` (`WORKDIR/prior_autoregressive`): PCA codes (`PcaBuckets`, fitted on the
  training embeddings and saved as `pca.npz` beside the checkpoints) predicted by a
  DALL·E-style transformer after the caption, with the text embedding added to the caption
  positions; sampled with the key/value cache.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dalle_jax.diffusion import schedules
from dalle_jax.models.dalle import DalleTransformer, sample_image_tokens
from dalle_jax.models.prior import DiffusionPrior, PcaBuckets
from dalle_jax.tasks.clip import TrainedClip
from dalle_jax.tasks.decoder import guided_with, loss_with, sample_with, schedule_of, train_split_embeddings
from dalle_jax.text.tokenizer import TextTokenizer

KINDS = ("diffusion", "autoregressive")


def normalize(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)


@dataclasses.dataclass(frozen=True, eq=False)
class PriorTask:
    kind: str
    model: nn.Module  # DiffusionPrior or DalleTransformer
    text_tokenizer: TextTokenizer
    embed_training_images: Callable[[], np.ndarray]  # `train_image_embeddings`, computed
    embed_training_captions: Callable[[], np.ndarray]  # `train_text_embeddings`, computed
    embedding_dim: int  # P, CLIP's projection
    config: Any
    name: str
    schedule: schedules.NoiseSchedule | None = None  # diffusion
    pca: PcaBuckets | None = None  # autoregressive

    @classmethod
    def from_config(cls, config, workdir: str | pathlib.Path, *, training: bool = True) -> "PriorTask":
        """The prior of `config` over the work dir's CLIP. The training set is CLIP-embedded when
        training first reads it (cached on disk), so sampling needs no data set. The autoregressive
        prior's PCA is fitted to those embeddings when `training` (saved as `pca.npz`), else read
        from that file."""
        workdir = pathlib.Path(workdir)
        p = config.prior
        if p.kind not in KINDS:
            raise ValueError(f"prior.kind must be one of {KINDS}, got {p.kind!r}")
        text_tokenizer = TextTokenizer.load(workdir)
        m, name = p.model, f"prior_{p.kind}"
        trained_clip = TrainedClip.load(workdir)  # once: the embedding size, then the training set's embeddings
        embed = functools.partial(train_split_embeddings, config.data, trained_clip)
        common = dict(kind=p.kind, text_tokenizer=text_tokenizer, config=config, name=name,
                      embed_training_images=functools.partial(embed, "image"),
                      embed_training_captions=functools.partial(embed, config.text.caption_field),
                      embedding_dim=trained_clip.model.projection_dim)
        if p.kind == "diffusion":
            model = DiffusionPrior(vocab_size=text_tokenizer.vocab_size, caption_length=config.text.max_length,
                                   width=m.width, depth=m.depth, num_heads=m.num_heads, head_dim=m.head_dim,
                                   mlp_dim=m.mlp_dim, dtype=jnp.dtype(m.dtype),
                                   attention_impl=m.get("attention_impl", "auto"))
            return cls(model=model, schedule=schedule_of(p), **common)
        pca_file = workdir / name / "pca.npz"
        if training:
            pca = PcaBuckets.fit(common["embed_training_images"](), variance=p.pca_variance, num_buckets=p.num_buckets)
            if jax.process_index() == 0:
                pca_file.parent.mkdir(parents=True, exist_ok=True)
                pca.save(pca_file)
        elif pca_file.exists():
            pca = PcaBuckets.load(pca_file)
        else:
            raise FileNotFoundError(f"no {pca_file}: train the autoregressive prior first (python run.py train-prior)")
        model = DalleTransformer(
            text_vocab_size=text_tokenizer.vocab_size, image_vocab_size=p.num_buckets,
            text_length=config.text.max_length, grid_size=(1, pca.num_components), embed_dim=m.width, depth=m.depth,
            num_heads=m.num_heads, head_dim=m.head_dim, mlp_dim=m.mlp_dim, attention_kinds=("full",) * m.depth,
            text_condition=True, dtype=jnp.dtype(m.dtype), attention_impl=m.get("attention_impl", "auto"))
        return cls(model=model, pca=pca, **common)

    @functools.cached_property
    def train_image_embeddings(self) -> np.ndarray:
        """`float32 [num_train, P]`: the training images' CLIP embeddings (computed once, cached on disk)."""
        return self.embed_training_images()

    @functools.cached_property
    def train_text_embeddings(self) -> np.ndarray:
        """`float32 [num_train, P]`: the CLIP embeddings of the training examples' captions."""
        return self.embed_training_captions()

    @functools.cached_property
    def train_codes(self) -> np.ndarray:
        """Autoregressive: `[num_train, K]` PCA codes of the training images' embeddings."""
        return self.pca.encode(self.train_image_embeddings)

    # -- training ------------------------------------------------------------------------

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        index = int(example["index"])
        caption, text_embedding = example[self.config.text.caption_field], self.train_text_embeddings[index]
        if rng.random() < self.config.prior.caption_dropout:
            caption, text_embedding = "", np.zeros_like(text_embedding)
        batch = {"caption": self.text_tokenizer.encode(caption, self.config.text.max_length),
                 "text_embedding": text_embedding}
        if self.kind == "diffusion":
            batch["image_embedding"] = self.train_image_embeddings[index] * np.sqrt(self.embedding_dim)
        else:
            batch["codes"] = self.train_codes[index]
        return batch

    def init(self, rng: jax.Array, batch: dict) -> dict:
        if self.kind == "diffusion":
            t = jnp.zeros(batch["caption"].shape[:1], jnp.int32)
            return self.model.init(rng, batch["image_embedding"], t, batch["text_embedding"], batch["caption"])
        tokens = jnp.concatenate([batch["caption"], batch["codes"]], axis=1)
        return self.model.init(rng, tokens[:, :-1], condition=batch["text_embedding"])

    def loss_fn(self, params, batch: dict, rng: jax.Array, *, step, model_state):
        del step
        if self.kind == "diffusion":
            model_fn = lambda z, t: self.model.apply({"params": params}, z, t, batch["text_embedding"],
                                                     batch["caption"])
            loss = loss_with(self.config.prior, model_fn, self.schedule, batch["image_embedding"], rng)
            return loss.mean(), {}, model_state
        tokens = jnp.concatenate([batch["caption"], batch["codes"]], axis=1)
        hidden = self.model.apply({"params": params}, tokens[:, :-1], condition=batch["text_embedding"])
        logits = self.model.apply({"params": params}, hidden[:, self.model.text_length - 1:], method="image_logits")
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["codes"]).mean()
        return loss, {"code_accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["codes"])}, model_state

    # -- sampling ------------------------------------------------------------------------

    @functools.cached_property
    def sample(self):
        """Jitted `(params, captions int32 [n, L], text_embeddings [n, P], rng)` to unit-norm
        image embeddings `[n, P]`."""
        p = self.config.prior
        empty = jnp.asarray(self.text_tokenizer.encode("", self.config.text.max_length))

        def sample_diffusion(params, captions, text_embeddings, rng):
            k, n = p.num_candidates, captions.shape[0]
            repeat = lambda x: jnp.tile(x, (k,) + (1,) * (x.ndim - 1))  # candidate-major: [k * n, ...]
            condition = (repeat(text_embeddings), repeat(captions))
            null = (jnp.zeros_like(condition[0]), jnp.broadcast_to(empty, condition[1].shape))
            apply = lambda z, t, c: self.model.apply({"params": params}, z, t, *c)
            model_fn = guided_with(p, self.schedule, apply, condition, null)
            noise_key, sample_key = jax.random.split(rng)
            noise = jax.random.normal(noise_key, (k * n, self.embedding_dim))
            candidates = normalize(sample_with(p, model_fn, self.schedule, noise, sample_key, clip_x0=False))
            candidates = candidates.reshape(k, n, -1)
            best = jnp.argmax(jnp.einsum("knp,np->kn", candidates, text_embeddings), axis=0)
            return jnp.take_along_axis(candidates, best[None, :, None], axis=0)[0]

        def sample_autoregressive(params, captions, text_embeddings, rng):
            codes = sample_image_tokens(self.model, params, captions, rng, empty_text=empty,
                                        guidance_scale=p.sample.guidance_scale, temperature=p.sample.temperature,
                                        condition=text_embeddings)
            return normalize(self.pca.decode(codes))

        return jax.jit(sample_diffusion if self.kind == "diffusion" else sample_autoregressive)
