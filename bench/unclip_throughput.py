"""unCLIP throughput on this machine; prints one JSON object.

Decoder: 32×32 images, batch 8 (`--batch`), base width 64, channel multipliers 1-2-4, 2 residual blocks
per level, attention at 16 and 8, a 2-layer caption encoder of width 128 and 4 CLIP tokens.
Prior: the diffusion prior (width 256, depth 4, batch 64) over 24 caption tokens and
256-dimensional embeddings. Reports training images/s (decoder, with its model-FLOPs
utilisation: XLA's FLOP count of the compiled step against the matmul peak measured in the
same run) and steps/s (prior), and guided decoder sampling images/s for each sampler and step count.

  python bench/unclip_throughput.py [--steps 10] [--dtype float32|bfloat16] [--batch 8] [--samplers ddpm:250,ddim:50,...]
"""

from __future__ import annotations

import argparse
import json
import resource

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dalle_throughput import compiled_flops, matmul_peak_flops, timed  # bench/ is on the path when this runs
from dalle_jax.diffusion import gaussian, samplers, schedules
from dalle_jax.models.clip import TextEncoder
from dalle_jax.models.decoder import Decoder
from dalle_jax.models.prior import DiffusionPrior
from dalle_jax.nn import conv
from dalle_jax.nn.unet import UNet
from dalle_jax.train.state import create_state, train_step

SIZE, CAPTION, VOCAB, EMBEDDING = 32, 24, 512, 256
PRIOR_BATCH = 64


def compiled_training_step(model, example_args, loss_of, compiler_options=None):
    """(the compiled AdamW training step of `loss_of`, its initial state, the initial parameters)."""
    params = nn.unbox(model.init(jax.random.key(0), *example_args))["params"]
    optimizer = optax.adamw(1e-4)
    state = create_state({"params": params}, optimizer, jax.random.key_data(jax.random.key(0)))

    def loss_fn(params, batch, rng, *, step, model_state):
        del step
        return loss_of(params, batch, rng), {}, model_state

    step = jax.jit(lambda s, b: train_step(s, b, jax.random.key(1), loss_fn=loss_fn, optimizer=optimizer),
                   compiler_options=compiler_options)
    return step.lower(state, example_args).compile(), state, params


def training_cost(model, example_args, loss_of, repeats: int, compiler_options=None) -> tuple[float, float, dict]:
    """(seconds per training step, FLOPs per step, initial parameters)."""
    compiled, state, params = compiled_training_step(model, example_args, loss_of, compiler_options)
    return timed(compiled, state, example_args, repeats=repeats), compiled_flops(compiled), params


def bench_decoder(batch: int, dtype, schedule, keys):
    """(the decoder, its training inputs `(images, t, image embeddings, captions)`, its loss
    `(params, inputs, rng) -> scalar`): width 64 × (1, 2, 4), 2 blocks a level, attention at 16 and 8."""
    unet = UNet(base_channels=64, channel_mults=(1, 2, 4), num_res_blocks=2, attention_resolutions=(16, 8),
                num_heads=4, out_channels=3, dtype=dtype)
    text = TextEncoder(vocab_size=VOCAB, length=CAPTION, embed_dim=128, depth=2, num_heads=4, head_dim=32,
                       mlp_dim=512, dtype=dtype)
    decoder = Decoder(unet, text, embed_dim=256, num_clip_tokens=4, dtype=dtype)
    images = jax.random.uniform(keys[0], (batch, SIZE, SIZE, 3), minval=-1, maxval=1)
    embeddings = jax.random.normal(keys[1], (batch, EMBEDDING))
    captions = jax.random.randint(keys[2], (batch, CAPTION), 4, VOCAB)

    def decoder_loss(params, inputs, rng):
        x0, _, embedding, caption = inputs
        model_fn = lambda x, t: decoder.apply({"params": params}, x, t, embedding, caption)
        return gaussian.diffusion_loss(model_fn, schedule, x0, rng, "epsilon").mean()

    return decoder, (images, jnp.zeros(batch, jnp.int32), embeddings, captions), decoder_loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samplers", default="ddpm:250,ddim:50,ddim:20,dpm_solver_pp:20,dpm_solver_pp:10")
    args = parser.parse_args()
    dtype, batch = jnp.dtype(args.dtype), args.batch
    schedule = schedules.make_schedule("cosine", 1000)
    keys = jax.random.split(jax.random.key(0), 4)

    decoder, decoder_args, decoder_loss = bench_decoder(batch, dtype, schedule, keys)
    images, _, embeddings, captions = decoder_args
    decoder_seconds, decoder_flops, decoder_params = training_cost(decoder, decoder_args, decoder_loss, args.steps,
                                                                   conv.compiler_options())

    prior = DiffusionPrior(vocab_size=VOCAB, caption_length=CAPTION, width=256, depth=4, num_heads=8, head_dim=32,
                           mlp_dim=1024, dtype=dtype)
    prior_args = (jax.random.normal(keys[3], (PRIOR_BATCH, EMBEDDING)), jnp.zeros(PRIOR_BATCH, jnp.int32),
                  jax.random.normal(keys[1], (PRIOR_BATCH, EMBEDDING)),
                  jax.random.randint(keys[2], (PRIOR_BATCH, CAPTION), 4, VOCAB))

    def prior_loss(params, inputs, rng):
        z0, _, text_embedding, caption = inputs
        model_fn = lambda z, t: prior.apply({"params": params}, z, t, text_embedding, caption)
        return gaussian.diffusion_loss(model_fn, schedule, z0, rng, "x0").mean()

    prior_seconds, _, _ = training_cost(prior, prior_args, prior_loss, args.steps)
    peak = matmul_peak_flops(dtype)

    apply = lambda x, t, c: decoder.apply({"params": decoder_params}, x, t, *c)
    null = (jnp.zeros_like(embeddings), jnp.zeros_like(captions))
    guided = samplers.classifier_free_guidance(apply, (embeddings, captions), null, 3.0)
    sampling = {}
    for spec in args.samplers.split(","):
        name, steps = spec.split(":")
        spacing = "quadratic" if name == "dpm_solver_pp" else "uniform"
        draw = jax.jit(lambda noise, key, name=name, steps=int(steps), spacing=spacing: samplers.sample(
            guided, schedule, noise, key, sampler=name, num_steps=steps, prediction="epsilon", clip_x0=True,
            spacing=spacing), compiler_options=conv.compiler_options())
        seconds = timed(draw, jax.random.normal(keys[0], images.shape), jax.random.key(5), repeats=1)
        sampling[f"{name}_{steps}"] = batch / seconds

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    print(json.dumps({
        "device": f"{device.platform}:{device.device_kind}", "dtype": str(dtype),
        "decoder": {"image_size": SIZE, "batch": batch, "base_channels": 64, "channel_mults": [1, 2, 4],
                    "params": int(sum(x.size for x in jax.tree.leaves(decoder_params)))},
        "decoder_train_images_per_sec": batch / decoder_seconds,
        "decoder_train_gflop_per_step": decoder_flops / 1e9,
        "decoder_train_mfu": decoder_flops / decoder_seconds / peak,
        "matmul_peak_tflops_per_sec": peak / 1e12,
        "prior_train_steps_per_sec": 1 / prior_seconds,
        "prior_batch": PRIOR_BATCH,
        "decoder_sampling_images_per_sec_guided": sampling,
        "peak_device_memory_mb": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
        "peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, indent=2))


if __name__ == "__main__":
    main()
