"""A lone 3×3 convolution with both its gradients on this CPU, under XLA:CPU flag settings; prints JSON.

  python bench/conv_cpu.py                 # each setting of FLAG_SETTINGS in its own process
  python bench/conv_cpu.py --flags=--xla_cpu_experimental_ynn_fusion_type=   # one setting
  python bench/conv_cpu.py --step          # and the decoder's training step
  .venv-convert/bin/python bench/conv_cpu.py --karlo   # forward only, at Karlo's UNet shapes, and PyTorch's rate
  python bench/conv_cpu.py --step-convolutions --seconds 0.6   # the decoder step's convolutions, each part alone
  python bench/conv_cpu.py --step-ynn-kinds --rounds 3   # the decoder's step with each of YNN_KIND_SETTINGS

XLA reads `XLA_FLAGS` once, when its CPU client starts, so each setting runs in a child process. The
convolution is the UNets' (NHWC, SAME padding, batch 8) at the shapes of the decoder's levels; FLOPs are
3 × 2 · b · h · w · c_in · c_out · 9 (the forward pass and the two gradients). With `--step`, each setting
also times `bench/unclip_throughput.py`'s decoder training step (batch 8).
With `--karlo`, the convolutions are forward only (sampling), batch and shape those of Karlo's UNets
(`KARLO_SHAPES`), and, where PyTorch is installed, PyTorch's rate at the same shapes follows (NCHW,
`torch.nn.Conv2d`, its default threads). With `--step-convolutions`, every convolution of the decoder's
training step (its shapes, read from the loss's jaxpr) is timed alone: forward, input gradient and
kernel gradient, each weighted by how often the step runs it and summed, so that the
step's time can be split between its convolutions and the rest. With `--step-ynn-kinds`, the decoder's
step is compiled once for each of `YNN_KIND_SETTINGS` (the fusion kinds handed to YNNPACK, through
`jax.jit`'s compiler options rather than the process's flags) and the steps are timed in turn in one process.
docs/performance.md and docs/weights.md quote it.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import time

# (none): XLA's defaults; YNNPACK takes the convolutions and matrix products in JAX 0.10.
FLAG_SETTINGS = ("", "--xla_cpu_experimental_ynn_fusion_type=",
                 "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
SHAPES = ((32, 64), (16, 128), (8, 256))  # (side, channels)
# `xla_cpu_experimental_ynn_fusion_type` for `--step-ynn-kinds`: "reduce" is `nn/conv.py`'s `compiler_options()`.
YNN_KIND_SETTINGS = {"none": "", "reduce": "LIBRARY_FUSION_TYPE_REDUCE",
                     "reduce_eltwise": "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_ELTWISE"}
# (batch, side, channels): the super-resolution UNet's levels at 256 px, one image; the decoder's at 64 px,
# an image and its unguided twin.
KARLO_SHAPES = ((1, 256, 320), (1, 128, 640), (1, 64, 960), (1, 32, 1280),
                (2, 64, 320), (2, 32, 640), (2, 16, 960), (2, 8, 1280))


def conv_nhwc(x, kernel, strides=(1, 1), padding="SAME"):
    """The UNets' convolution as XLA takes it: NHWC inputs, HWIO kernels, XLA's own gradients."""
    import jax

    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def bench_decoder(batch: int):
    """`bench/unclip_throughput.py`'s decoder, its training inputs and loss (`bench_decoder` there)."""
    import pathlib

    sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]), str(pathlib.Path(__file__).resolve().parent)]
    import jax
    import jax.numpy as jnp

    import unclip_throughput
    from dalle_jax.diffusion import schedules

    return unclip_throughput.bench_decoder(batch, jnp.float32, schedules.make_schedule("cosine", 1000),
                                           jax.random.split(jax.random.key(0), 4))


def repeated_seconds(call, seconds: float) -> float:
    """Seconds per `call()` over at least `seconds` (two calls at the least), after one untimed call."""
    call()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls


def forward_rates(framework: str, seconds: float) -> dict:
    """GFLOP/s of a 3×3 convolution, channels in = out, forward only, at each of `KARLO_SHAPES`."""
    rates = {}
    for batch, side, channels in KARLO_SHAPES:
        if framework == "jax":
            import jax

            x = jax.random.normal(jax.random.key(0), (batch, side, side, channels))
            kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, channels)) * 0.02
            conv = jax.jit(conv_nhwc)
            call = lambda: jax.block_until_ready(conv(x, kernel))
        else:
            import torch

            conv, x = torch.nn.Conv2d(channels, channels, 3, padding=1), torch.randn(batch, channels, side, side)
            call = torch.inference_mode()(lambda: conv(x))
        flops = 2 * batch * side * side * channels * channels * 9
        rates[f"{batch}x{side}px_{channels}ch_gflop_per_second"] = round(flops / repeated_seconds(call, seconds) / 1e9, 1)
    return rates


def gflop_per_second(batch: int, side: int, channels: int, seconds: float) -> float:
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.key(0), (batch, side, side, channels))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, channels)) * 0.05

    def loss(x, kernel):
        y = conv_nhwc(x, kernel)
        return jnp.sum(y * y)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    per_call = repeated_seconds(lambda: jax.block_until_ready(step(x, kernel)), seconds)
    return round(3 * 2 * batch * side * side * channels * channels * 9 / per_call / 1e9, 1)


def step_convolutions(loss, params, inputs) -> collections.Counter:
    """How often the loss's forward pass runs each convolution: `(x shape, kernel shape, strides, padding)`,
    read from its jaxpr (every one is the UNets' NHWC convolution, `dalle_jax/nn/conv.py`)."""
    import jax
    from dalle_jax.train import flops

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                x, kernel = (var.aval.shape for var in eqn.invars)
                yield x, kernel, tuple(eqn.params["window_strides"]), tuple(map(tuple, eqn.params["padding"]))
            for sub in flops.sub_jaxprs(eqn.params):
                yield from walk(sub)

    return collections.Counter(walk(jax.make_jaxpr(lambda p: loss(p, inputs, jax.random.key(1)))(params).jaxpr))


def step_convolution_seconds(batch: int, seconds: float) -> dict:
    """Seconds a decoder training step spends in each part of its convolutions, each shape timed alone."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    decoder, inputs, loss = bench_decoder(batch)
    params = nn.unbox(jax.eval_shape(decoder.init, jax.random.key(0), *inputs))["params"]
    shapes, totals = step_convolutions(loss, params, inputs), collections.Counter()
    for (x_shape, kernel_shape, strides, padding), count in shapes.items():
        x = jax.random.normal(jax.random.key(0), x_shape)
        kernel = jax.random.normal(jax.random.key(1), kernel_shape) * 0.05
        plain = lambda x, kernel: conv_nhwc(x, kernel, strides, padding)
        dy = jnp.ones_like(plain(x, kernel))
        parts = {
            "forward": jax.jit(plain),
            "input_grad": jax.jit(lambda x, kernel: jax.vjp(lambda x: plain(x, kernel), x)[1](dy)[0]),
            "kernel_grad": jax.jit(lambda x, kernel: jax.vjp(lambda k: plain(x, k), kernel)[1](dy)[0]),
        }
        for name, part in parts.items():
            totals[name] += count * repeated_seconds(lambda: jax.block_until_ready(part(x, kernel)), seconds)
    return {"step_convolution_shapes": len(shapes), "step_convolutions": sum(shapes.values()),
            **{f"step_{name}_seconds": round(total, 3) for name, total in totals.items()}}


def decoder_step_images_per_second(batch: int, rounds: int) -> dict:
    """Images/s of the decoder's training step, the best of `rounds` timings of 2 steps."""
    decoder, inputs, loss = bench_decoder(batch)  # puts the repository and bench/ on the path
    from unclip_throughput import compiled_training_step, timed

    compiled, state, _ = compiled_training_step(decoder, inputs, loss)
    seconds = min(timed(compiled, state, inputs, repeats=2) for _ in range(rounds))
    return {"decoder_step_images_per_second": round(batch / seconds, 2)}


def decoder_step_seconds_by_ynn_kinds(batch: int, rounds: int) -> dict:
    """Seconds a decoder training step, compiled with each of `YNN_KIND_SETTINGS` handed to YNNPACK: the best
    of `rounds` timings of 3 steps, the settings taking turns so that the machine's drift falls on all alike."""
    decoder, inputs, loss = bench_decoder(batch)  # puts the repository and bench/ on the path
    from unclip_throughput import compiled_training_step, timed

    steps = {name: compiled_training_step(decoder, inputs, loss, {"xla_cpu_experimental_ynn_fusion_type": kinds})[:2]
             for name, kinds in YNN_KIND_SETTINGS.items()}
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, (compiled, state) in steps.items():
            best[name] = min(best[name], timed(compiled, state, inputs, repeats=3))
    return {f"step_seconds_ynn_{name}": round(seconds, 3) for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flags", default=None, help="one XLA_FLAGS setting (default: each of FLAG_SETTINGS)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed per shape")
    parser.add_argument("--step", action="store_true", help="also time the decoder's training step")
    parser.add_argument("--rounds", type=int, default=3,
                        help="--step, --step-ynn-kinds: timings of 2 and 3 steps, the best kept")
    parser.add_argument("--karlo", action="store_true", help="forward only, at Karlo's shapes; and PyTorch's")
    parser.add_argument("--step-convolutions", action="store_true",
                        help="the decoder step's convolutions, each part alone, summed over the step")
    parser.add_argument("--step-ynn-kinds", action="store_true",
                        help="the decoder's step with each of YNN_KIND_SETTINGS handed to YNNPACK, in one process")
    args = parser.parse_args()
    if args.step_ynn_kinds:
        print(json.dumps({"batch": args.batch, **decoder_step_seconds_by_ynn_kinds(args.batch, args.rounds)}))
        return
    if args.flags is None:
        for flags in FLAG_SETTINGS:
            command = [sys.executable, __file__, f"--flags={flags}", "--batch", str(args.batch),
                       "--seconds", str(args.seconds), "--rounds", str(args.rounds)]
            command += ["--step"] * args.step + ["--karlo"] * args.karlo
            command += ["--step-convolutions"] * args.step_convolutions
            out = subprocess.run(command, check=True, capture_output=True, text=True,
                                 env=os.environ | {"XLA_FLAGS": flags}).stdout
            print(out.strip().splitlines()[-1], flush=True)
        if args.karlo and importlib.util.find_spec("torch"):
            import torch

            print(json.dumps({"framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
                              **forward_rates("torch", args.seconds)}))
        return
    os.environ["XLA_FLAGS"] = args.flags  # read when JAX's CPU client starts, after this
    if args.karlo:
        print(json.dumps({"framework": "jax", "xla_flags": os.environ.get("XLA_FLAGS", ""),
                          **forward_rates("jax", args.seconds)}))
        return
    row = {f"{side}px_{channels}ch_gflop_per_second": gflop_per_second(args.batch, side, channels, args.seconds)
           for side, channels in SHAPES}
    if args.step:
        row |= decoder_step_images_per_second(args.batch, args.rounds)
    if args.step_convolutions:
        row |= step_convolution_seconds(args.batch, args.seconds)
    print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""), "batch": args.batch, **row}))


if __name__ == "__main__":
    main()
