"""The UNets' GroupNorm on this CPU: flax's `nn.GroupNorm` against `nn/unet.py`'s, alone and in the
shapes decoder; prints JSON lines.

  python bench/group_norm_cpu.py              # norms alone, then the decoder's training step and forward pass
  python bench/group_norm_cpu.py --rounds 6   # more alternations of the two decoders

`nn/unet.py`'s `GroupNorm` sums each channel over the positions and then the groups' channels; flax's
reduces each group's strided block. Both give the same parameters, statistics and gradients
(tests/nn/test_unet.py). First each norm followed by SiLU (as the UNets use it) at the shapes below, forward
and forward plus backward, under the UNets' compiler options. Then `configs/shapes_unclip.py`'s decoder
(a UNet of width 32 × (1, 2, 2), so groups of 1 and 2 channels, with its caption encoder; a vocabulary of
512) built twice, once with each norm, compiled in one process and timed in turn, `--rounds` times: its
AdamW training step at the config's batch (32) and its forward pass at a sampler's batch (64: 8 prompts ×
4 candidates × guided and unguided). Each timing is the median of 5 calls; the rows give every round's.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import time
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]

from dalle_jax.config import config_from_file  # noqa: E402
from dalle_jax.models.decoder import Decoder  # noqa: E402
from dalle_jax.nn import conv, unet  # noqa: E402
from dalle_jax.tasks.decoder import build_decoder, loss_with, schedule_of  # noqa: E402
from unclip_throughput import compiled_training_step  # noqa: E402

# (batch, side, channels, groups): the shapes decoder's norms (training batch 32), bench/unclip_throughput.py's
# decoder's (batch 8), and Karlo's super-resolution UNet's first level (one 256-px image).
NORM_SHAPES = ((32, 32, 32, 32), (32, 16, 64, 32), (8, 32, 64, 32), (8, 32, 192, 32), (8, 8, 256, 32),
               (1, 256, 320, 32))
SAMPLING_BATCH = 64
VOCAB = 512


def flax_group_norm(channels: int, dtype, name=None, groups: int = 0, eps: float = unet.NORM_EPS) -> nn.GroupNorm:
    """`unet.group_norm` as it was: flax's `nn.GroupNorm`."""
    return nn.GroupNorm(num_groups=groups or math.gcd(32, channels), epsilon=eps, dtype=dtype, name=name)


NORMS = {"flax": flax_group_norm, "dalle_jax": unet.group_norm}


def median_seconds(fn, *args, calls: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def norms_alone() -> list[dict]:
    rows = []
    for batch, side, channels, groups in NORM_SHAPES:
        x = jax.random.normal(jax.random.key(0), (batch, side, side, channels))
        row = {"shape": [batch, side, side, channels], "groups": groups}
        for name, make in NORMS.items():
            norm = make(channels, jnp.float32, groups=groups)
            params = norm.init(jax.random.key(1), x)
            forward = lambda p, x: nn.silu(norm.apply(p, x))
            both = jax.grad(lambda p, x: jnp.sum(forward(p, x) * x), argnums=(0, 1))
            for what, fn in (("forward", forward), ("forward_backward", both)):
                seconds = median_seconds(jax.jit(fn, compiler_options=conv.compiler_options()), params, x)
                row[f"{name}_{what}_ms"] = round(seconds * 1e3, 3)
        for what in ("forward", "forward_backward"):
            row[f"speedup_{what}"] = round(row[f"flax_{what}_ms"] / row[f"dalle_jax_{what}_ms"], 2)
        rows.append(row)
    return rows


def shapes_decoder() -> tuple[Decoder, tuple, object]:
    """(the decoder of configs/shapes_unclip.py, its training inputs, its loss)."""
    config = config_from_file(pathlib.Path(__file__).resolve().parents[1] / "configs" / "shapes_unclip.py")
    section = config.decoder
    decoder = build_decoder(config, VOCAB)
    batch, size = section.train.batch_size, section.image_size
    keys = jax.random.split(jax.random.key(0), 3)
    inputs = (jax.random.uniform(keys[0], (batch, size, size, 3), minval=-1, maxval=1), jnp.zeros(batch, jnp.int32),
              jax.random.normal(keys[1], (batch, config.model.projection_dim)),  # CLIP's image embeddings
              jax.random.randint(keys[2], (batch, config.text.max_length), 4, VOCAB))
    schedule = schedule_of(section)

    def loss(params, inputs, rng):
        x0, _, embedding, caption = inputs
        model_fn = lambda x, t: decoder.apply({"params": params}, x, t, embedding, caption)
        return loss_with(section, model_fn, schedule, x0, rng).mean()

    return decoder, inputs, loss


def decoder_programs(norm) -> dict:
    """The shapes decoder's training step and forward pass, compiled with `norm` as the UNets' norm (the
    UNet calls `unet.group_norm` when it is traced)."""
    with mock.patch.object(unet, "group_norm", norm):
        decoder, inputs, loss = shapes_decoder()
        step, state, params = compiled_training_step(decoder, inputs, loss, conv.compiler_options())
        repeat = lambda x: jnp.repeat(x, SAMPLING_BATCH // x.shape[0], axis=0)
        sampling_inputs = tuple(repeat(x) for x in inputs)
        forward = jax.jit(lambda p, x, t, e, c: decoder.apply({"params": p}, x, t, e, c),
                          compiler_options=conv.compiler_options()).lower(params, *sampling_inputs).compile()
    return {"step": (step, state, inputs), "forward": (forward, params, sampling_inputs)}


def decoders(rounds: int) -> dict:
    programs = {name: decoder_programs(norm) for name, norm in NORMS.items()}
    times = {name: {"training_step": [], "forward": []} for name in NORMS}
    for _ in range(rounds):
        for name, p in programs.items():
            step, state, inputs = p["step"]
            times[name]["training_step"].append(median_seconds(lambda: step(state, inputs)[1]))
            forward, params, sampling_inputs = p["forward"]
            times[name]["forward"].append(median_seconds(forward, params, *sampling_inputs))
    row = {"model": "configs/shapes_unclip.py decoder", "training_batch": programs["flax"]["step"][2][0].shape[0],
           "sampling_batch": SAMPLING_BATCH, "rounds": rounds}
    for name, by_program in times.items():
        for program, seconds in by_program.items():
            row[f"{name}_{program}_s"] = [round(s, 4) for s in seconds]
    for program in ("training_step", "forward"):
        best = {name: min(times[name][program]) for name in NORMS}
        median = {name: statistics.median(times[name][program]) for name in NORMS}
        row[f"speedup_{program}_best"] = round(best["flax"] / best["dalle_jax"], 3)
        row[f"speedup_{program}_median"] = round(median["flax"] / median["dalle_jax"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    for row in norms_alone():
        print(json.dumps(row), flush=True)
    print(json.dumps(decoders(args.rounds) | {"jax": jax.__version__}), flush=True)


if __name__ == "__main__":
    main()
