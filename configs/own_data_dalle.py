"""DALL·E 1 on your own images and captions, at the paper's 256×256 with a 32×32 token grid.

  C="--config configs/own_data_dalle.py --config.data.source=folder:photos --config.data.name=photos"
  C="$C --workdir workdir/photos"
  python run.py build-data            $C   # data/image_text/photos/1.0.0 (+ build_report.json)
  python run.py show-data             $C --split validation --out photos.png
  python run.py train-text-tokenizer  $C
  python run.py train-image-tokenizer $C   # VQ-VAE, 256×256 → 32×32 codes
  python run.py train                 $C   # the transformer over [64 text ; 1,024 image tokens]
  python run.py generate              $C --prompt "a red boat on a lake" --num-samples 4 --out boats.png
  python run.py eval                  $C   # no oracle: samples beside true images, CLIP score with a CLIP

`data.source` is `folder:DIR`, `webdataset:GLOB` or `parquet:GLOB` (data/readers.py). It is read once, by
build-data (or by the first command that needs the data); later commands read `data.name` from
`data.data_dir`, and generate / eval need only the work dir. Variants: `default` (sized for an accelerator:
docs/data.md gives its step times and memory on a 2-core CPU), `paper` (the paper's tokens: OpenAI's released
dVAE, 8,192 codes on a 32×32 grid, 256 text tokens; docs/weights.md), `cpu` (a few minutes a stage on a
laptop, the same 256-px images and 32×32 grid) and `tiny` (32×32 images, 8×8 tokens: the tests).

With OpenAI's weights (`paper`), the image tokenizer and CLIP are imported rather than trained:
  python run.py import-weights $C --kind openai-dvae --source dall_e_weights   # encoder.pkl, decoder.pkl
  python run.py import-weights $C --kind hf-clip --source clip-vit-base-patch32  # a transformers snapshot
  python run.py generate $C --prompt "a red boat on a lake" --rerank 16 --keep 4 --out boats.png
"""

from dalle_jax.config import base_config


def get_config(variant: str = "default"):
    c = base_config()
    c.task = "dalle"
    c.data.name = "my_images"
    c.data.image_size = 256
    c.data.validation_fraction = 0.01
    c.data.worker_count = 0  # decoded by grain's threads: faster than worker processes on 2 cores (docs/data.md)
    c.text.vocab_size = 8_192  # an upper bound: a small corpus gives fewer pieces
    c.text.max_length = 64

    c.image_tokenizer = dict(
        kind="vqvae",  # or "dvae"
        # Three halvings: 256 → 32, the paper's grid.
        num_codes=1_024, code_dim=64, channels=(32, 64, 128), num_res_blocks=1, dtype="float32",
        commitment_weight=0.25, ema_decay=0.99,  # vqvae
        reconstruction_loss="logit_laplace",  # dvae: or "mse"
        temperature_start=1.0, temperature_end=1 / 16, temperature_anneal_steps=5_000,  # dvae
        kl_weight=6.6, kl_warmup_steps=2_000,  # dvae
        train=dict(steps=10_000, batch_size=16, log_every=100, save_every=1_000),  # 7.5 GB on the CPU
        optim=dict(learning_rate=1e-3, warmup_steps=500, weight_decay=0.0),
    )
    c.model = dict(embed_dim=512, depth=8, num_heads=8, head_dim=64, mlp_dim=2_048, dtype="float32",
                   # the paper's pattern: row layers, a column layer every fourth, convolutional last
                   attention="sparse", conv_kernel=11,
                   remat="none", scan_layers=False,  # memory and compile time: docs/performance.md
                   attention_impl="auto")
    c.loss = dict(text_weight=1 / 8, image_weight=7 / 8, caption_dropout=0.1)
    c.train.steps = 50_000
    c.train.batch_size = 8  # 11.8 GB on the CPU (docs/data.md); raise it on an accelerator
    c.train.log_every = 100
    c.train.save_every = 1_000
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 1_000
    c.sample = dict(temperature=1.0, top_k=0, top_p=0.95, guidance_scale=1.0, candidates=4, batch_size=16)
    c.eval = dict(num_prompts=64, seed=0)

    if variant == "paper":  # Ramesh et al. 2021: 256 BPE text tokens, then 32×32 tokens of the released dVAE
        c.text.vocab_size, c.text.max_length = 16_384, 256
        c.image_tokenizer = dict(kind="openai_dvae", num_codes=8_192, hidden=256, blocks_per_group=2,
                                 init_channels=128, dtype="float32")
        c.train.batch_size = 4  # docs/weights.md: step time and memory on a 2-core CPU
    elif variant == "cpu":  # minutes on a 2-core laptop: smaller models, the same 256-px data and 32×32 grid
        c.image_tokenizer.update(num_codes=512, code_dim=32, channels=(16, 32, 64))
        c.image_tokenizer.train = dict(steps=300, batch_size=4, log_every=25, save_every=100)
        c.model.update(embed_dim=256, depth=4, num_heads=4, head_dim=64, mlp_dim=1_024, attention="full")
        c.train.update(steps=200, batch_size=4, log_every=25, save_every=100)
        c.optim.update(learning_rate=1e-3, warmup_steps=50)
        c.sample.update(candidates=1, batch_size=4)
        c.eval.num_prompts = 8
    elif variant == "tiny":
        c.data.image_size = 32
        c.data.validation_fraction = 0.25
        c.data.worker_count = 0
        c.data.build_workers = 2
        c.text.vocab_size, c.text.max_length = 256, 16
        c.image_tokenizer.update(num_codes=32, code_dim=8, channels=(8, 8))
        c.image_tokenizer.train = dict(steps=4, batch_size=8, log_every=2, save_every=4)
        c.model.update(embed_dim=32, depth=2, num_heads=2, head_dim=16, mlp_dim=64, attention="full", conv_kernel=3)
        c.train.update(steps=4, batch_size=8, log_every=2, save_every=4)
        c.optim.warmup_steps = 2
        c.sample.update(candidates=2, batch_size=8)
        c.eval.num_prompts = 4
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r} of own_data_dalle.py; expected 'default', 'paper', 'cpu' or "
                         "'tiny'")
    return c
