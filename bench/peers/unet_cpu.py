"""The unCLIP decoder's training step on this CPU beside dalle2-pytorch's, in one run; prints JSON.

  python bench/peers/unet_cpu.py              # installs the peer in .peers/dalle2-pytorch first if it is missing
  python bench/peers/unet_cpu.py --rounds 3   # alternate the two sides three times

This project's side is `bench/unclip_throughput.py`'s decoder (32×32, batch 8, UNet width 64 × (1, 2, 4),
2 blocks a level, attention at 16 and 8, a 2-layer caption encoder); the peer's is
`bench/peers/dalle2_pytorch_unet.py` in its own virtual environment (pinned below). The models differ in
their details, so the comparison is of the rate each achieves in model FLOPs a second, counted alike on
both sides: 3 × the forward pass's matrix products and convolutions, `2 · multiply-adds`, every kernel tap
counted (this project's `train/flops.py` over the loss's jaxpr; PyTorch's `FlopCounterMode` over a forward
pass). XLA's own count of the compiled step is lower (it leaves out the taps that fall on the padding, 16%
of a 3×3 convolution's at 8×8, and adds elementwise work), so it is reported beside it, not compared. Each
side times its steps one by one and gives the median, and the sides alternate so that both see the same
machine; the last line gives the ratio of the best rounds and of the median rounds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEER_ENV = REPO / ".peers" / "dalle2-pytorch"
# torch 2.14.1 with torchvision 0.29.1 (which dalle2-pytorch imports; a CPU machine uses the CPU either way).
PEER_REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1", "dalle2-pytorch==1.15.6")


def install_peer() -> pathlib.Path:
    python = PEER_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True)
    return python


def this_project(batch: int, steps: int) -> dict:
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    import jax
    import jax.numpy as jnp

    from dalle_jax.diffusion import schedules
    from dalle_jax.nn import conv
    from dalle_jax.train import flops
    from dalle_throughput import compiled_flops
    from unclip_throughput import bench_decoder, compiled_training_step

    decoder, inputs, loss = bench_decoder(batch, jnp.float32, schedules.make_schedule("cosine", 1000),
                                          jax.random.split(jax.random.key(0), 4))
    step, state, params = compiled_training_step(decoder, inputs, loss, conv.compiler_options())  # as trained
    model_flops = flops.training_flops(loss, params, inputs, jax.random.key(1))
    state, _ = jax.block_until_ready(step(state, inputs))  # the first call, untimed
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(step(state, inputs))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"side": "dalle-jax", "jax": jax.__version__, "batch": batch,
            "parameters_millions": round(sum(x.size for x in jax.tree.leaves(params)) / 1e6, 1),
            "seconds_per_step": round(seconds, 4), "mean_seconds_per_step": round(statistics.mean(times), 4),
            "images_per_second": round(batch / seconds, 2),
            "gflop_per_step": round(model_flops / 1e9, 1), "gflop_per_second": round(model_flops / seconds / 1e9, 1),
            "xla_counted_gflop_per_step": round(compiled_flops(step) / 1e9, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--side", choices=("dalle-jax",), help=argparse.SUPPRESS)  # one side, in a child process
    args = parser.parse_args()
    if args.side:
        print(json.dumps(this_project(args.batch, args.steps)))
        return
    peer_python = install_peer()
    sides = {"dalle-jax": [sys.executable, __file__, "--side", "dalle-jax"],
             "dalle2-pytorch": [str(peer_python), str(HERE / "dalle2_pytorch_unet.py")]}
    rows = []
    for round_ in range(args.rounds):
        for name, command in sides.items():
            start = time.perf_counter()
            out = subprocess.run([*command, "--batch", str(args.batch), "--steps", str(args.steps)], check=True,
                                 capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1]) | {"round": round_,
                                                              "wall_seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    rates = {name: [r["gflop_per_second"] for r in rows if r["side"] == name] for name in sides}
    best = {name: max(side_rates) for name, side_rates in rates.items()}
    median = {name: statistics.median(side_rates) for name, side_rates in rates.items()}
    print(json.dumps({"best_gflop_per_second": best, "median_gflop_per_second": median,
                      "ratio_dalle_jax_to_peer": round(best["dalle-jax"] / best["dalle2-pytorch"], 2),
                      "ratio_of_medians": round(median["dalle-jax"] / median["dalle2-pytorch"], 2)}))


if __name__ == "__main__":
    main()
