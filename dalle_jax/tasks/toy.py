"""The toy task: object count (3-way) and colour presence (8 binary labels) from an image."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dalle_jax.data import shapes
from dalle_jax.models.toy import ToyClassifier

_NUM_COLOURS = len(shapes.COLOUR_NAMES)


@dataclasses.dataclass(frozen=True)
class ToyTask:
    model: ToyClassifier
    name: str = "toy"

    @classmethod
    def from_config(cls, config, workdir=None) -> "ToyTask":
        del workdir
        return cls(ToyClassifier(num_outputs=shapes.MAX_OBJECTS + _NUM_COLOURS, embed_dim=config.model.embed_dim,
                                 mlp_dim=config.model.mlp_dim, patch_size=config.model.patch_size,
                                 dtype=jnp.dtype(config.model.dtype)))

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        del rng
        present = np.zeros(_NUM_COLOURS, np.float32)
        present[example["colours"][example["colours"] >= 0]] = 1.0
        return {"image": example["image"], "count": np.int32(example["num_objects"] - 1), "colours": present}

    def init(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, batch["image"])

    def loss_fn(self, params, batch: dict, rng: jax.Array, *, step, model_state):
        del rng, step
        logits = self.model.apply({"params": params}, batch["image"])
        count_logits, colour_logits = logits[:, : shapes.MAX_OBJECTS], logits[:, shapes.MAX_OBJECTS:]
        count_loss = optax.softmax_cross_entropy_with_integer_labels(count_logits, batch["count"]).mean()
        colour_loss = optax.sigmoid_binary_cross_entropy(colour_logits, batch["colours"]).mean()
        metrics = {
            "count_accuracy": jnp.mean(jnp.argmax(count_logits, -1) == batch["count"]),
            "colour_accuracy": jnp.mean((colour_logits > 0) == (batch["colours"] > 0.5)),
        }
        return count_loss + colour_loss, metrics, model_state
