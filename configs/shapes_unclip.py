"""unCLIP (DALL·E 2) on the shapes data: CLIP, a prior, a 32×32 decoder and a 32 → 64 upsampler.

  W="--config configs/shapes_unclip.py --workdir workdir/unclip"
  python run.py train-text-tokenizer $W
  python run.py train-clip $W            # this file's `model`, `train` and `optim` sections
  python run.py train-prior $W           # --config.prior.kind=autoregressive for the other prior
  python run.py train-decoder $W
  python run.py train-upsampler $W       # --stage N: the Nth of `upsamplers` (the cascade variant has two)
  python run.py unclip-generate $W --prompt "a small red circle" --num-samples 8
  python run.py eval $W                  # oracle accuracy, as for DALL·E 1

Prior, decoder and upsampler train in 41 minutes on 2 CPU cores (docs/unclip.md, "Paying for decoder steps"). Each stage
section (`prior`, `decoder`, `upsampler`) carries its own `train` and `optim`,
laid over the shared ones (`config.stage_config`).

The upsamplers are a cascade, `upsamplers` naming their sections lowest resolution first; each
upsamples to the next one's `low_res_size`, the last to `data.image_size`. The paper chains two
(64 → 256 → 1024); the `cascade` variant does so on shapes: a 16×16 decoder, then 16 → 32 →
64, the last stage being the default's `upsampler` (docs/unclip.md, "A cascade of two upsamplers").
"""

import pathlib

from dalle_jax.config import config_from_file

HERE = pathlib.Path(__file__).parent
VARIANTS = ("default", "tiny", "cascade", "tiny_cascade")


def _diffusion(prediction, sampler, num_steps, spacing, guidance_scale=1.0, guidance_interval=(0.0, 1.0), eta=0.0,
               logit_normal_std=0.0, logit_normal_mean=0.0):
    # min_snr_gamma > 0: the loss weighted by min(SNR, γ) in x₀ terms (gaussian.min_snr_weight); 0: unweighted.
    # guidance_interval (LOW, HIGH): guide only at t / T in that range (samplers.classifier_free_guidance).
    # logit_normal_std > 0: training timesteps drawn logit-normal, the middle of the schedule more often
    # (gaussian.sample_timesteps); 0: uniform. logit_normal_mean > 0 moves their mode towards the noise.
    return dict(schedule="cosine", num_timesteps=1000, prediction=prediction, min_snr_gamma=0.0,
                logit_normal_std=logit_normal_std, logit_normal_mean=logit_normal_mean,
                sample=dict(sampler=sampler, num_steps=num_steps, spacing=spacing, eta=eta,
                            guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                            temperature=1.0))


def get_config(variant: str = "default"):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} of shapes_unclip.py; expected one of {VARIANTS}")
    # CLIP (train-clip reads `model`, `train`, `optim`): issue 4's, reading the images box-averaged to its size.
    size = "tiny" if variant.startswith("tiny") else "default"  # of the configs this one builds on
    c = config_from_file(HERE / f"shapes_clip.py:{size}")
    c.task = "unclip"
    c.model.image_size = c.data.image_size
    c.data.image_size *= 2
    c.eval.update(num_prompts=200, seed=0)

    c.prior = dict(
        kind="diffusion",  # or "autoregressive"
        model=dict(width=128, depth=4, num_heads=4, head_dim=32, mlp_dim=512, dtype="float32", attention_impl="auto"),
        caption_dropout=0.1, num_candidates=2,  # diffusion: keep the better of 2 by dot product with the text
        pca_variance=0.99, num_buckets=1024,  # autoregressive
        **_diffusion("x0", "ddim", 64, "uniform"),
        # 1,000 steps: its draws lie as near the true embeddings as after 2,000 (docs/unclip.md, "Paying for decoder steps").
        train=dict(steps=1_000, batch_size=64, log_every=100, save_every=1_000, eval_every=0),
        optim=dict(learning_rate=1e-3, warmup_steps=200, weight_decay=0.01, ema_decay=0.999),
    )
    c.decoder = dict(
        image_size=32,
        model=dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8,),
                   num_heads=4, embed_dim=128, dropout=0.0, text_width=64, text_depth=1, num_clip_tokens=4,
                   upsample_at_low_res=False, dtype="float32", remat="none", attention_impl="auto"),
        caption_dropout=0.5, image_embedding_dropout=0.1,
        self_condition=False,  # True: the UNet also reads its previous x̂₀ (Chen et al. 2022; a second forward pass)
        # η = 1: SDE-DPM-Solver++(2M), as accurate in 20 steps as DDPM in 250 (docs/unclip.md, "Samplers for the decoder").
        # Logit-normal timesteps: 61.6% single-object against 47.4 and 49.3 uniform (docs/unclip.md, "Timesteps").
        # Guidance 3 below t = 0.7 T only: 70.6% against 61.1 at guidance 2 throughout (docs/unclip.md, "Guidance interval").
        **_diffusion("v", "dpm_solver_pp", 20, "quadratic", guidance_scale=3.0, guidance_interval=(0.0, 0.7), eta=1.0,
                     logit_normal_std=1.0),
        # 2,300 steps, not 1,500: more steps are what lift the decoder (docs/unclip.md, "Decoder steps").
        train=dict(steps=2_300, batch_size=32, log_every=100, save_every=500, eval_every=0),
        # 3e-3 learns in 1,500 steps what 1e-3 does not (docs/unclip.md, "Decoder recipes, compared on one GPU").
        optim=dict(learning_rate=3e-3, warmup_steps=200, weight_decay=0.0, ema_decay=0.999),
    )
    # CLIP keeps the best of 4 draws per prompt (pipelines/unclip.py), as DALL·E 1 keeps the best of its samples;
    # 1 draws plainly (docs/unclip.md, "Paying for decoder steps").
    c.decoder.sample.candidates = 4
    c.upsampler = dict(
        # Trained on 16×16 crops of the 64×64 images (8×8 low-res crops), as the paper trains on crops of 1/4 size:
        # as good as 32×32 crops at under half the time (docs/unclip.md, "Paying for decoder steps").
        low_res_size=32, crop_size=16,
        max_blur_sigma=0.6, max_noise_std=0.05,
        model=dict(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(), num_heads=1,
                   embed_dim=128, dropout=0.0, upsample_at_low_res=False, dtype="float32", remat="none",
                   attention_impl="auto"),
        **_diffusion("v", "dpm_solver_pp", 20, "quadratic"),
        # 300 steps, not 600, to leave the decoder the time within 45 minutes (docs/unclip.md, "Decoder steps").
        train=dict(steps=300, batch_size=32, log_every=100, save_every=300, eval_every=0),
        optim=dict(learning_rate=1e-3, warmup_steps=100, weight_decay=0.0, ema_decay=0.999),
    )
    c.upsamplers = ("upsampler",)  # the cascade: its stages' sections, lowest resolution first
    # DALL·E 3's captioner, trained on this work dir's CLIP (`train-captioner --mode alt`, then `--mode descriptive`),
    # only to compare ways of choosing among draws (bench/unclip_rerankers.py; docs/unclip.md, "Choosing among draws").
    c.captioner = config_from_file(HERE / f"shapes_dalle3.py:{size}").captioner
    c.sample = dict(batch_size=64)

    if size == "tiny":
        c.data.image_size, c.model.image_size = 32, 16
        c.eval.num_prompts = 4
        c.prior.model.update(width=32, depth=1, num_heads=2, head_dim=16, mlp_dim=64)
        c.prior.update(num_buckets=16)
        c.prior.sample.num_steps = 4
        c.decoder.image_size = 16
        c.decoder.model.update(base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), num_heads=2,
                               embed_dim=32, text_width=16)
        c.decoder.sample.update(num_steps=3, candidates=1)
        c.upsampler.update(low_res_size=16, crop_size=16)
        c.upsampler.model.update(base_channels=8, embed_dim=32)
        c.upsampler.sample.num_steps = 3
        for stage in (c.prior, c.decoder, c.upsampler):
            stage.train.update(steps=3, batch_size=8, log_every=1, save_every=3)
        c.sample.batch_size = 4
    if variant.endswith("cascade"):
        # The first stage upsamples the decoder's images, now half the size, to the default decoder's size.
        c.decoder.image_size //= 2
        c.first_upsampler = c.upsampler.to_dict() | {"low_res_size": c.decoder.image_size}
        c.upsamplers = ("first_upsampler", "upsampler")
    return c
