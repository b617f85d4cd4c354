"""Karlo text-to-image in this project against diffusers' UnCLIPPipeline, side by side on one machine.

  make test-convert    # builds .venv-convert: PyTorch, transformers and diffusers beside JAX
  .venv-convert/bin/python bench/karlo_speed.py [--sizes full] [--batch 1 4] [--snapshot DIR]
  python bench/karlo_speed.py --frameworks jax --snapshot DIR   # a GPU host without PyTorch

One text-to-image sample at diffusers' defaults (prior 25 steps, decoder 25, super-resolution 7;
guidance 4 and 8) per batch size; `--steps P D S` sets the three step counts on both sides (a quick look
at a setting, such as `XLA_FLAGS`, before a full run). Without --snapshot, a snapshot of random weights
is written first, at Karlo's sizes (`full`: a 1B prior, 900M decoder, 2 × 700M super-resolution UNets,
CLIP ViT-L/14's text tower; about 14 GB of float32) or the test fixture's (`tiny`). Each framework runs
in its own process (so each has the memory to itself and its peak is its own), a warm-up call first (JAX
compiles there), then `--repeats` timed calls (`--repeats 0`: the first call is the timing, compilation
included; at full size on a CPU that halves the run, and JAX's compile is about 2% of a call). Prints
one JSON line per framework and batch: seconds per call, images/s, the first call's seconds, peak
resident memory; then the ratio of diffusers' seconds to this project's. `--count-flops` counts diffusers'
FLOPs instead (a call, and a step of each stage), from which each side's achieved FLOP rate follows.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests_convert")]

PROMPT = "a high-resolution photograph of a big red frog on a green leaf"
STEPS = {"prior": 25, "decoder": 25, "super_res": 7}  # diffusers' defaults, and the pipeline's here

# Karlo v1 alpha's configs (diffusers' scripts/convert_kakao_brain_unclip_to_diffusers.py; the text
# encoder is OpenAI's CLIP ViT-L/14 text tower).
FULL = dict(
    text_encoder=dict(hidden_size=768, projection_dim=768, intermediate_size=3072, num_attention_heads=12,
                      num_hidden_layers=12),
    image_encoder=dict(hidden_size=1024, projection_dim=768, intermediate_size=4096, num_attention_heads=16,
                       num_hidden_layers=24, image_size=224, patch_size=14),
    prior=dict(),  # PriorTransformer's defaults are Karlo's
    text_proj=dict(clip_extra_context_tokens=4, clip_embeddings_dim=768, time_embed_dim=1280, cross_attention_dim=1536),
    decoder=dict(sample_size=64, layers_per_block=3, in_channels=3, out_channels=6, block_out_channels=(320, 640, 960, 1280),
                 down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
                 up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
                 mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=1536, class_embed_type="identity",
                 attention_head_dim=64, resnet_time_scale_shift="scale_shift"),
    super_res=dict(sample_size=256, layers_per_block=3, in_channels=6, out_channels=3,
                   block_out_channels=(320, 640, 960, 1280), down_block_types=("ResnetDownsampleBlock2D",) * 4,
                   up_block_types=("ResnetUpsampleBlock2D",) * 4, add_attention=False),
    merges=None,  # CLIP's whole vocabulary
)


def peak_memory_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)  # KB on Linux


def timed(call, repeats: int) -> dict:
    tick = time.perf_counter()
    call()
    first = time.perf_counter() - tick
    seconds = []
    for _ in range(repeats):
        tick = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - tick)
    return {"first_call_s": round(first, 2), "seconds": round(min(seconds, default=first), 2)}


def run_jax(snapshot: str, batch: int, repeats: int, dtype: str, steps: dict) -> dict:
    import dataclasses

    import jax
    import jax.numpy as jnp

    from dalle_jax.pipelines.karlo import DEFAULT_SAMPLING, Karlo

    assert {stage: s.num_steps for stage, s in DEFAULT_SAMPLING.items()} == STEPS  # diffusers' defaults, both sides
    sampling = {stage: dataclasses.replace(s, num_steps=steps[stage]) for stage, s in DEFAULT_SAMPLING.items()}
    tick = time.perf_counter()
    karlo = Karlo.load(snapshot, jnp.dtype(dtype))
    load = time.perf_counter() - tick
    call = lambda: karlo.generate([PROMPT] * batch, jax.random.key(0), sampling)
    return {"load_s": round(load, 1), **timed(call, repeats), "device": jax.devices()[0].device_kind}


def diffusers_sampler(snapshot: str, dtype: str = "float32"):
    """diffusers' Karlo pipeline of `snapshot`, and `sample(batch, steps)`: one call at `steps` a stage."""
    import torch

    import make_fixtures

    pipeline = make_fixtures.load_karlo_pipeline(pathlib.Path(snapshot)).to(getattr(torch, dtype))
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return lambda batch, steps: pipeline(
        [PROMPT] * batch, generator=generator, output_type="np", prior_num_inference_steps=steps["prior"],
        decoder_num_inference_steps=steps["decoder"], super_res_num_inference_steps=steps["super_res"])


def run_diffusers(snapshot: str, batch: int, repeats: int, dtype: str, steps: dict) -> dict:
    import torch

    tick = time.perf_counter()
    sample = diffusers_sampler(snapshot, dtype)
    load = time.perf_counter() - tick
    with torch.inference_mode():
        return {"load_s": round(load, 1), **timed(lambda: sample(batch, steps), repeats),
                "torch_threads": torch.get_num_threads()}


def diffusers_flops(snapshot: str, batch: int, steps: dict) -> dict:
    """FLOPs of one diffusers call at `steps`, by PyTorch's counter (its matrix products and convolutions,
    `torch.utils.flop_counter`), and of one step of each stage: the call is counted at 2 steps a stage (the
    scheduler's least) and with each stage a step longer in turn; the rest is what runs once a call."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sample = diffusers_sampler(snapshot)

    def counted(**longer) -> int:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            sample(batch, {stage: 2 + longer.get(stage, 0) for stage in STEPS})
        return counter.get_total_flops()

    base = counted()
    per_step = {stage: counted(**{stage: 1}) - base for stage in STEPS}
    once = base - 2 * sum(per_step.values())
    total = once + sum(steps[stage] * flops for stage, flops in per_step.items())
    return {"batch": batch, "steps": steps, "gflop_per_call": round(total / 1e9, 3),
            "gflop_once_per_call": round(once / 1e9, 3),
            **{f"gflop_per_{stage}_step": round(flops / 1e9, 3) for stage, flops in per_step.items()}}


def child(args) -> None:
    run = {"jax": run_jax, "diffusers": run_diffusers}[args.child]
    steps = dict(zip(STEPS, args.steps))
    result = run(args.snapshot, args.child_batch, args.repeats, args.dtype, steps)
    print(json.dumps({"framework": args.child, "batch": args.child_batch, "dtype": args.dtype, "steps": steps,
                      "xla_flags": os.environ.get("XLA_FLAGS", ""), **result,
                      "images_per_s": round(args.child_batch / result["seconds"], 4),
                      "peak_memory_gb": peak_memory_gb()}))


def write_snapshot(directory: pathlib.Path, sizes: str) -> pathlib.Path:
    import make_fixtures

    return make_fixtures.random_karlo_snapshot(directory, FULL if sizes == "full" else make_fixtures.TINY_KARLO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshot", help="a Karlo snapshot (diffusers layout); default: random weights")
    parser.add_argument("--sizes", choices=("full", "tiny"), default="full")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after the first (0: time the first)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, nargs=3, default=list(STEPS.values()),
                        metavar=("PRIOR", "DECODER", "SUPER_RES"))
    parser.add_argument("--frameworks", nargs="+", default=["jax", "diffusers"], choices=("jax", "diffusers"))
    parser.add_argument("--count-flops", action="store_true",
                        help="instead of timing: diffusers' FLOPs a call and a step of each stage (PyTorch's counter)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = args.snapshot or str(write_snapshot(pathlib.Path(scratch) / "karlo", args.sizes))
        if args.count_flops:
            for batch in args.batch:
                print(json.dumps(diffusers_flops(snapshot, batch, dict(zip(STEPS, args.steps)))), flush=True)
            return
        results = {}
        for batch in args.batch:
            for framework in args.frameworks:
                out = subprocess.run([sys.executable, __file__, "--snapshot", snapshot, "--child", framework,
                                      "--child-batch", str(batch), "--repeats", str(args.repeats), "--dtype",
                                      args.dtype, "--steps", *map(str, args.steps)],
                                     capture_output=True, text=True, check=False)
                if out.returncode:
                    raise SystemExit(f"{framework} at batch {batch} failed:\n{out.stderr[-3000:]}")
                line = out.stdout.strip().splitlines()[-1]
                print(line, flush=True)
                results[framework, batch] = json.loads(line)
            if len(args.frameworks) == 2:
                ratio = results["diffusers", batch]["seconds"] / results["jax", batch]["seconds"]
                print(json.dumps({"batch": batch, "diffusers_seconds_over_ours": round(ratio, 2)}), flush=True)


if __name__ == "__main__":
    main()
