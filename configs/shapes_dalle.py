"""DALL·E 1 on the shapes data: image tokenizer, then the text+image transformer.

  python run.py train-text-tokenizer  --config configs/shapes_dalle.py --workdir workdir/dalle
  python run.py train-image-tokenizer --config configs/shapes_dalle.py --workdir workdir/dalle
  python run.py train                 --config configs/shapes_dalle.py --workdir workdir/dalle
  python run.py eval                  --config configs/shapes_dalle.py --workdir workdir/dalle

Variants: `default` (32×32 images, 8×8 tokens), `demo` (a shorter run for `make demo`),
`tiny` (tests), `paper` (the paper's 256×256 images, 32×32 grid, 8192 codes, 64 layers;
valid, far too large for a laptop).
"""

from dalle_jax.config import base_config


def get_config(variant: str = "default"):
    c = base_config()
    c.task = "dalle"
    c.data.image_size = 32
    c.data.num_train = 20_000
    c.data.num_validation = 1_000
    c.data.num_test_compositional = 1_000
    c.text.max_length = 24

    c.image_tokenizer = dict(
        kind="vqvae",  # or "dvae"
        num_codes=256, code_dim=32, channels=(32, 64), num_res_blocks=1, dtype="float32",
        commitment_weight=0.25, ema_decay=0.99,  # vqvae
        reconstruction_loss="logit_laplace",  # dvae: or "mse"
        temperature_start=1.0, temperature_end=1 / 16, temperature_anneal_steps=800,  # dvae
        kl_weight=6.6, kl_warmup_steps=500,  # dvae
        train=dict(steps=800, batch_size=32, log_every=50, save_every=400),
        optim=dict(learning_rate=2e-3, warmup_steps=100, weight_decay=0.0),
    )

    c.model = dict(
        embed_dim=128, depth=4, num_heads=4, head_dim=32, mlp_dim=512, dtype="float32",
        # "sparse" = the paper's pattern (row layers, a column layer every fourth, conv last);
        # "full" = dense causal; or one of "full", "row", "column", "conv" per layer. With 4 layers
        # over 88 positions, full attention measured better (docs/dalle1.md) at the same cost.
        attention="full", conv_kernel=5,
        remat="none",  # what the backward pass recomputes to save memory: none, dots or full
        scan_layers=False,  # one scanned block for all layers: compiles in a fraction of the time
        # einsum, xla, cudnn or auto: cuDNN's fused kernel on a GPU in bfloat16 where every layer is "full",
        # einsum elsewhere (nn/attention.py; docs/performance.md)
        attention_impl="auto",
    )
    c.loss = dict(text_weight=1 / 8, image_weight=7 / 8, caption_dropout=0.1)
    c.train.steps = 5_000
    c.train.batch_size = 32
    c.train.log_every = 100
    c.train.save_every = 1_000
    c.optim.learning_rate = 2e-3  # measured against 1e-3 in docs/dalle1.md
    c.optim.warmup_steps = 200

    # Chosen by the measurements in docs/dalle1.md. guidance_scale=1 turns classifier-free guidance
    # off; each image is the best of `candidates` samples by the model's own likelihood (1 = plain
    # sampling). batch_size counts sequences, so batch_size // candidates prompts per call.
    c.sample = dict(temperature=0.9, top_k=0, top_p=1.0, guidance_scale=1.0, candidates=16, batch_size=256)
    c.eval = dict(num_prompts=200, seed=0)

    if variant == "demo":
        c.data.num_train = 6_000
        c.image_tokenizer.train.steps = 600
        c.image_tokenizer.temperature_anneal_steps = 600
        c.train.steps = 1_500
        c.eval.num_prompts = 64
    elif variant == "tiny":
        c.data.num_train, c.data.num_validation, c.data.num_test_compositional = 256, 32, 32
        c.image_tokenizer.update(num_codes=32, code_dim=8, channels=(8, 8), temperature_anneal_steps=4,
                                 kl_warmup_steps=2)
        c.image_tokenizer.train = dict(steps=4, batch_size=8, log_every=2, save_every=4)
        c.model.update(embed_dim=32, depth=2, num_heads=2, head_dim=16, mlp_dim=64)
        c.train.update(steps=4, batch_size=8, log_every=2, save_every=4)
        c.sample.update(candidates=2, batch_size=8)
        c.eval.num_prompts = 8
    elif variant == "paper":
        c.data.image_size = 256
        c.text.max_length = 256
        c.text.vocab_size = 16_384
        c.image_tokenizer.update(kind="dvae", num_codes=8192, code_dim=256, channels=(128, 256, 512),
                                 num_res_blocks=2, temperature_anneal_steps=150_000, kl_warmup_steps=5_000)
        c.model.update(embed_dim=3968, depth=64, num_heads=62, head_dim=64, mlp_dim=4 * 3968, dtype="bfloat16",
                       attention="sparse", conv_kernel=11)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r} of shapes_dalle.py; expected default, demo, tiny or paper")
    return c
