"""Toy classifier on the shapes data: the foundation's end-to-end check of the trainer.

  python run.py train --config configs/shapes_toy.py --workdir workdir/toy
  python run.py train --config configs/shapes_toy.py:tiny --workdir /tmp/toy   # seconds
"""

from dalle_jax.config import base_config


def get_config(variant: str = "default"):
    c = base_config()
    c.task = "toy"
    c.model = dict(embed_dim=32, mlp_dim=64, patch_size=8, dtype="float32")
    c.data.num_train = 5_000
    c.train.steps = 300
    c.train.save_every = 100
    if variant == "tiny":  # for tests: a small data set, a few steps
        c.data.image_size = 32
        c.data.num_train, c.data.num_validation, c.data.num_test_compositional = 256, 32, 32
        c.model.patch_size = 4
        c.train.steps, c.train.batch_size, c.train.log_every, c.train.save_every = 8, 16, 2, 4
        c.optim.warmup_steps = 2
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r} of shapes_toy.py; expected 'default' or 'tiny'")
    return c
