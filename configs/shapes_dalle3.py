"""DALL·E 3's recaptioning experiment on shapes (Betker et al. 2023).

  python run.py dalle3-experiment --config configs/shapes_dalle3.py --workdir workdir/dalle3

runs every stage into one work dir, skipping the stages already done: text and image
tokenizers, CLIP, the captioner (alt-text pretraining, then short and descriptive
fine-tunes), recaptioning of the data set in both modes, then the same DALL·E 1 transformer
trained for `experiment.dalle_steps` on (a) the alt-text captions, (b) short synthetic
captions blended at 0.95, (c) descriptive synthetic captions blended at 0.95, each evaluated
on the canonical descriptive prompts with the oracle and CLIP score.

The stages also run one by one (`train-captioner --config.captioner.mode=short`, `caption`,
`recaption --mode descriptive`). Variants: `default`, `tiny` (tests).
"""

import pathlib

from dalle_jax.config import config_from_file

HERE = pathlib.Path(__file__).parent


def get_config(variant: str = "default"):
    if variant not in ("default", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of shapes_dalle3.py; expected 'default' or 'tiny'")
    c = config_from_file(HERE / f"shapes_dalle.py:{variant}")  # data, tokenizers and the text-to-image model
    c.clip_config = f"{HERE / 'shapes_clip.py'}:{variant}"  # the CLIP the captioner starts from and scores with

    c.captioner = dict(
        mode="alt",  # which captioner `train-captioner` trains: alt, short or descriptive
        # F(i): the CLIP image tower's output tokens (1 + 64 for 4-pixel patches of 32×32), one
        # prefix token each; `pooled_features=True` reads the one projected embedding instead.
        pooled_features=False,
        patch_coordinates=True,  # each patch's prefix token also carries its (row, column); docs/dalle3.md
        model=dict(num_prefix=65, embed_dim=128, depth=3, num_heads=4, head_dim=32, mlp_dim=512, dtype="float32"),
        decode=dict(temperature=0.0, top_p=1.0, beam_size=1),  # greedy; beam_size > 1 for beam search
        train=dict(steps=800, batch_size=64, log_every=50, save_every=400, eval_every=200),
        eval_images=256,  # validation images whose captions are scored every train.eval_every steps
        optim=dict(learning_rate=1e-3, warmup_steps=100),
        # Steps of the fine-tunes from alt. Relations are the slow part of descriptive captions
        # (relation recall 33% / 48% at steps 600 / 800 of an 800-step run; docs/dalle3.md).
        finetune_steps=dict(short=800, descriptive=2_000),
    )
    c.recaption = dict(chunk_size=2048, batch_size=512)
    c.experiment = dict(
        arms=("alt", "short", "descriptive"),  # (a), (b), (c)
        synthetic_caption_rate=0.95,
        dalle_steps=c.train.steps,  # the DALL·E 1 default schedule, so that arm (c) compares with its table
        num_prompts=200,
    )

    if variant == "tiny":
        c.captioner.model.update(embed_dim=32, depth=1, num_heads=2, head_dim=16, mlp_dim=64)
        c.captioner.train.update(steps=4, batch_size=8, log_every=2, save_every=4, eval_every=4)
        c.captioner.eval_images = 8
        c.captioner.finetune_steps = dict(short=2, descriptive=2)
        c.recaption = dict(chunk_size=100, batch_size=32)
        c.experiment.update(dalle_steps=4, num_prompts=8)
        c.train.steps = 4
    return c
