"""CLIP on the shapes data (32×32, the DALL·E config's images), for reranking and CLIP score.

  python run.py train-text-tokenizer --config configs/shapes_clip.py --workdir workdir/dalle   # if not there yet
  python run.py train-clip           --config configs/shapes_clip.py --workdir workdir/dalle
  python run.py eval-clip            --config configs/shapes_clip.py --workdir workdir/dalle
"""

from dalle_jax.config import base_config


def get_config(variant: str = "default"):
    c = base_config()
    c.task = "clip"
    c.data.image_size = 32
    c.text.max_length = 24
    c.model = dict(embed_dim=128, depth=3, num_heads=4, head_dim=32, mlp_dim=512, patch_size=4, pooling="cls",
                   patch_kernel=8, stem_channels=(), projection_dim=128, dtype="float32", attention_impl="auto")
    c.train.steps = 800
    c.train.batch_size = 128
    c.train.log_every = 50
    c.train.save_every = 500
    c.train.eval_every = 250
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.1
    c.eval = dict(num_examples=1_000)
    if variant == "tiny":
        c.data.num_train, c.data.num_validation, c.data.num_test_compositional = 256, 32, 32
        c.model.update(embed_dim=32, depth=1, num_heads=2, head_dim=16, mlp_dim=64, projection_dim=16)
        c.train.update(steps=4, batch_size=16, log_every=2, save_every=4, eval_every=2)
        c.eval.num_examples = 32
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r} of shapes_clip.py; expected 'default' or 'tiny'")
    return c
