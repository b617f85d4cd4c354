"""Sampling Kakao Brain's Karlo unCLIP (v1 alpha) from its diffusers snapshot (docs/weights.md):

  python run.py unclip-generate --weights karlo-v1-alpha --prompt "a red boat on a lake" --num-samples 4
  python run.py variations --weights karlo-v1-alpha-image-variations --image boat.jpg --num-samples 4
  python run.py unclip-generate --weights karlo-v1-alpha --prompt "a red boat on a lake" \
      --config.karlo.candidates=4 --config.karlo.image_encoder=karlo-v1-alpha-image-variations

run.py reads this config when --weights is given without --config. The steps and guidance
scales are diffusers' UnCLIPPipeline defaults, each stage sampling with DDPM on Karlo's schedule;
`sampler` may also be ddim or dpm_solver_pp (with `eta`), which read the decoder's ε alone, and
guidance applies where t / T is within `guidance_interval`.
"""

from dalle_jax.config import base_config


def _stage(num_steps: int, guidance_scale: float = 1.0):
    return dict(sampler="ddpm", num_steps=num_steps, eta=0.0, guidance_scale=guidance_scale,
                guidance_interval=(0.0, 1.0))


def get_config(variant: str = "default"):
    if variant != "default":
        raise ValueError(f"unknown variant {variant!r} of karlo.py; expected 'default'")
    c = base_config()
    c.task = "karlo"
    c.karlo = dict(
        dtype="float32",  # of parameters and computation; bfloat16 halves the memory (accelerators)
        batch_size=4,  # images sampled at once
        # > 1: draw this many 64-px images per image and keep the one CLIP puts nearest the prompt (then
        # super-resolve it alone), with the image encoder of the snapshot, else of `image_encoder`:
        # the directory of Karlo's image-variation snapshot (the text-to-image one has none).
        candidates=1,
        image_encoder="",
        prior=_stage(25, guidance_scale=4.0),
        decoder=_stage(25, guidance_scale=8.0),
        super_res=_stage(7),  # all but the last step by super_res_first, the last by super_res_last; unguided
    )
    return c
