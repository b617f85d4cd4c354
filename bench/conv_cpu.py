"""A lone 3×3 convolution with both its gradients on this CPU, under XLA:CPU flag settings; prints JSON.

  python bench/conv_cpu.py                 # each setting of FLAG_SETTINGS in its own process
  python bench/conv_cpu.py --flags=--xla_cpu_experimental_ynn_fusion_type=   # one setting
  python bench/conv_cpu.py --step          # and the decoder's training step, kernel gradient by taps or XLA's

XLA reads `XLA_FLAGS` once, when its CPU client starts, so each setting runs in a child process. The
convolution is the UNets' (NHWC, SAME padding, batch 8) at the shapes of the decoder's levels; FLOPs are
3 × 2 · b · h · w · c_in · c_out · 9 (the forward pass and the two gradients). With `--step`, each setting
also times `bench/unclip_throughput.py`'s decoder training step (batch 8) compiled twice, with the kernel
gradient by taps (`dalle_jax/nn/conv.py`, the CPU's default) and with XLA's own, the two alternating.
docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# (none): XLA's defaults; YNNPACK takes the convolutions and matrix products in JAX 0.10.
FLAG_SETTINGS = ("", "--xla_cpu_experimental_ynn_fusion_type=",
                 "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
SHAPES = ((32, 64), (16, 128), (8, 256))  # (side, channels)


def gflop_per_second(batch: int, side: int, channels: int, seconds: float) -> float:
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.key(0), (batch, side, side, channels))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, channels)) * 0.05

    def loss(x, kernel):
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(y * y)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready(step(x, kernel))  # compiles
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        jax.block_until_ready(step(x, kernel))
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    return round(3 * 2 * batch * side * side * channels * channels * 9 / per_call / 1e9, 1)


def decoder_step_images_per_second(batch: int, rounds: int) -> dict:
    """Images/s of the decoder's training step with the kernel gradient by taps and by XLA (best of `rounds`)."""
    import pathlib

    sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]
    import jax
    import jax.numpy as jnp

    from dalle_jax.diffusion import schedules
    from dalle_jax.nn import conv
    from unclip_throughput import bench_decoder, compiled_training_step, timed

    steps = {}
    for by_taps in (True, False):
        conv.KERNEL_GRAD_BY_TAPS_ON_CPU = by_taps  # read while the step is traced
        decoder, inputs, loss = bench_decoder(batch, jnp.float32, schedules.make_schedule("cosine", 1000),
                                              jax.random.split(jax.random.key(0), 4))
        compiled, state, _ = compiled_training_step(decoder, inputs, loss)
        steps["taps" if by_taps else "xla"] = (compiled, state, inputs)
    conv.KERNEL_GRAD_BY_TAPS_ON_CPU = True
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, (compiled, state, inputs) in steps.items():
            best[name] = min(best[name], timed(compiled, state, inputs, repeats=2))
    return {f"decoder_step_images_per_second_kernel_grad_{name}": round(batch / seconds, 2)
            for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flags", default=None, help="one XLA_FLAGS setting (default: each of FLAG_SETTINGS)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed per shape")
    parser.add_argument("--step", action="store_true", help="also time the decoder's training step both ways")
    parser.add_argument("--rounds", type=int, default=3, help="--step: alternations of the two steps")
    args = parser.parse_args()
    if args.flags is None:
        for flags in FLAG_SETTINGS:
            command = [sys.executable, __file__, f"--flags={flags}", "--batch", str(args.batch),
                       "--seconds", str(args.seconds), "--rounds", str(args.rounds)] + ["--step"] * args.step
            out = subprocess.run(command, check=True, capture_output=True, text=True,
                                 env=os.environ | {"XLA_FLAGS": flags}).stdout
            print(out.strip().splitlines()[-1], flush=True)
        return
    row = {f"{side}px_{channels}ch_gflop_per_second": gflop_per_second(args.batch, side, channels, args.seconds)
           for side, channels in SHAPES}
    if args.step:
        row |= decoder_step_images_per_second(args.batch, args.rounds)
    print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""), "batch": args.batch, **row}))


if __name__ == "__main__":
    main()
