"""Model-FLOPs utilisation of the trainer's own step at real sizes; JSON lines, then a table.

  python bench/scale.py                          # this machine's sizes: the real ones on a GPU or TPU, reduced on a CPU
  python bench/scale.py --models dalle_1.3b --dtypes bfloat16 --steps 20 --profile /tmp/trace

Models (`--models`): the DALL·E transformer at ≈350M (width 1,024, 24 layers, 16 heads) and ≈1.3B
(width 2,048, 24 layers, 32 heads) parameters over [256 text ; 32×32 image tokens] with dense causal
attention (what cuDNN's fused kernel runs), and the unCLIP decoder's UNet at width 192 × (1, 2, 3, 4),
3 blocks a level, attention at 32, 16 and 8, for 64-px images with a 4-layer caption encoder of width 512;
`*_cpu` are the same models reduced to run on a 2-core CPU in minutes. Each runs in float32 and bfloat16
(`--dtypes`), compute only: the parameters and Adam's moments are float32 either way.

Per run: parameters, compile seconds, seconds a step (the median of `--steps` after the first), tokens/s
or images/s, model FLOPs a step (the trainer's count, `train/flops.py`: 3 × the forward pass's matrix
products and convolutions) and XLA's count of the compiled step (more where `remat` recomputes), MFU
against the device's dense bfloat16 peak (`flops.PEAK_FLOPS`; none for a CPU) and against the
matrix-product rate measured in this run (a large square product in the run's dtype), the attention
implementation `auto` chose, and peak memory (the device's own count where it keeps one, else
XLA's plan of the step). `--profile DIR` writes a `jax.profiler` trace of 3 steps of each run, with the
step's optimised HLO beside it, and adds to the run's JSON where those steps' time went by kind of operation
(matrix products, convolutions, attention, reductions, copies, ...) and their busiest operations
(`bench/trace_summary.py`).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sized_models  # noqa: E402
import trace_summary  # noqa: E402
from dalle_jax.nn import attention, unet  # noqa: E402
from dalle_jax.train import flops, optim, partitioning, trainer  # noqa: E402

_DALLE_350M = dict(embed_dim=1024, depth=24, num_heads=16, head_dim=64, mlp_dim=4096)
_DALLE_1_3B = dict(embed_dim=2048, depth=24, num_heads=32, head_dim=64, mlp_dim=8192)
_UNET_192 = dict(base_channels=192, channel_mults=(1, 2, 3, 4), num_res_blocks=3, attention_resolutions=(32, 16, 8),
                 num_heads=12, embed_dim=768, text_width=512, text_depth=4, num_clip_tokens=4)  # heads of 32, 48, 64
# name: (builder, model keys, builder options, batch size)
MODELS = {
    "dalle_350m": ("dalle", _DALLE_350M, {}, 16),
    "dalle_1.3b": ("dalle", _DALLE_1_3B, {}, 8),
    "unet_192": ("decoder", _UNET_192, {}, 64),
    "dalle_cpu": ("dalle", dict(embed_dim=256, depth=4, num_heads=4, head_dim=64, mlp_dim=1024),
                  dict(text_length=64, grid=16), 4),
    "unet_cpu": ("decoder", dict(_UNET_192, base_channels=64, num_res_blocks=1, attention_resolutions=(16, 8),
                                 num_heads=4, embed_dim=256, text_width=128, text_depth=2),
                 dict(image_size=32, caption_length=32), 4),
}
ACCELERATOR_MODELS, CPU_MODELS = ("dalle_350m", "dalle_1.3b", "unet_192"), ("dalle_cpu", "unet_cpu")
PROFILED_STEPS = 3  # traced by --profile, after the timed ones


def build(name: str, dtype: str, remat: str):
    builder, model, options, batch = MODELS[name]
    model = dict(model, dtype=dtype, remat=remat, attention_impl="auto")
    if builder == "dalle":
        return sized_models.dalle(dict(model, attention="full", scan_layers=True), batch, **options)
    return sized_models.decoder(model, batch, **options)


def matmul_rate(dtype) -> float:
    """FLOP/s of a large square matrix product on random data in `dtype` (the best of 10)."""
    size = 1024 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    product = jax.jit(lambda x: x @ x)
    jax.block_until_ready(product(a))
    seconds = []
    for _ in range(10):
        start = time.perf_counter()
        jax.block_until_ready(product(a))
        seconds.append(time.perf_counter() - start)
    return 2 * size ** 3 / min(seconds)


def attention_choice(config, builder: str) -> str:
    """What `attention_impl=auto` runs in the model's attention layers while training (no cache)."""
    m = config.model if builder == "dalle" else config.decoder.model
    if builder == "dalle":
        layers = [(attention.ATTENTION_FALLBACK, m.head_dim)]  # (the layer's fallback, its head width)
    else:  # the UNet's heads at each attended resolution and in the middle block, then the caption encoder's
        size = config.decoder.image_size
        layers = [(unet.ATTENTION_FALLBACK, m.base_channels * mult // m.num_heads)
                  for level, mult in enumerate(m.channel_mults)
                  if size // 2 ** level in m.attention_resolutions or level == len(m.channel_mults) - 1]
        layers.append((attention.ATTENTION_FALLBACK, 64))
    chosen = [attention.resolve_implementation("auto", fallback, dtype=jnp.dtype(m.dtype), masked=False,
                                               cached=False, head_dim=head_dim) for fallback, head_dim in layers]
    return "+".join(sorted(set(chosen)))


def profiled(compiled, state, batch, trace_dir: pathlib.Path) -> dict:
    """`PROFILED_STEPS` more steps traced into `trace_dir`, with the step's HLO beside them, summarised by
    `trace_summary`; where the profiler or the summary fails, why (the run's own figures stand either way)."""
    try:
        with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
            for _ in range(PROFILED_STEPS):
                state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
        hlo = compiled.as_text()
        (trace_dir / "step_hlo.txt").write_text(hlo)
        return trace_summary.summarise(trace_summary.read_trace(trace_dir), hlo, PROFILED_STEPS)
    except Exception as error:  # noqa: BLE001 -- a bench run keeps its timings whatever the profiler does
        return {"error": f"{type(error).__name__}: {error}"}


def measure(name: str, dtype: str, remat: str, steps: int, profile: str) -> dict:
    config, task, example = build(name, dtype, remat)
    builder, batch_size = MODELS[name][0], config.train.batch_size
    mesh = partitioning.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    rules = partitioning.rules_from_config(config.sharding.rules)
    optimizer = optim.make_optimizer(config.optim, config.train.steps)
    init, shardings, abstract = trainer.sharded_state_layout(config, task, optimizer, example, mesh)
    step = trainer.make_step_fn(task, optimizer, mesh, rules, shardings)
    batch = jax.device_put(sized_models.random_batch(example, batch_size, np.random.default_rng(0)),
                           partitioning.batch_sharding(mesh))
    state = init()
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    seconds = []
    for i in range(steps + 1):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - start)
    summary = profiled(compiled, state, batch, pathlib.Path(profile) / f"{name}_{dtype}_{remat}") if profile else None
    step_seconds = statistics.median(seconds[1:])
    model_flops = flops.step_flops(task, abstract, example, batch_size, mesh, rules)
    cost = compiled.cost_analysis()
    xla_flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    device = mesh.devices.flat[0]
    peak = flops.peak_flops(device.device_kind)
    achieved = model_flops / step_seconds / mesh.devices.size
    rate = matmul_rate(jnp.dtype(dtype))
    memory = compiled.memory_analysis()
    planned = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
               + memory.temp_size_in_bytes)
    stats = device.memory_stats() or {}
    per_example = ("tokens", config.text.max_length + example["image_tokens"].shape[0] - 1) if builder == "dalle" \
        else ("images", 1)
    return {
        "model": name, "dtype": dtype, "remat": remat, "device_kind": device.device_kind, "devices": mesh.devices.size,
        "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""), "batch": batch_size,
        "parameters_millions": round(sum(x.size for x in jax.tree.leaves(state.params)) / 1e6, 1),
        "attention": attention_choice(config, builder), "compile_seconds": round(compile_seconds, 1),
        "seconds_per_step": round(step_seconds, 4),
        f"{per_example[0]}_per_second": round(batch_size * per_example[1] / step_seconds, 1),
        "model_tflops_per_step": round(model_flops / 1e12, 4), "xla_tflops_per_step": round(xla_flops / 1e12, 4),
        "model_tflops_per_second_per_device": round(achieved / 1e12, 3),
        "peak_tflops": peak and peak / 1e12, "mfu": peak and round(achieved / peak, 4),
        "matmul_tflops_measured": round(rate / 1e12, 3), "mfu_of_measured_matmul": round(achieved / rate, 4),
        "peak_memory_gb": round(stats.get("peak_bytes_in_use", planned) / 1e9, 2),
        "memory_source": "device" if "peak_bytes_in_use" in stats else "xla_plan",
        "loss": float(metrics["loss"]), **({"profile": summary} if summary else {}),
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| model | dtype | device | batch | attention | step | throughput | model TFLOP/s | MFU (peak) "
             "| MFU (measured matmul) | peak memory | compile |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        throughput = (f"{r['tokens_per_second']:,.0f} tokens/s" if "tokens_per_second" in r
                      else f"{r['images_per_second']:,.1f} images/s")
        mfu = "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['model']} ({r['parameters_millions']:,.0f}M) | {r['dtype']} | {r['device_kind']} "
                     f"| {r['batch']} | {r['attention']} | {r['seconds_per_step']:.3f} s | {throughput} "
                     f"| {r['model_tflops_per_second_per_device']:.3f} | {mfu} "
                     f"| {100 * r['mfu_of_measured_matmul']:.1f}% "
                     f"| {r['peak_memory_gb']:.2f} GB | {r['compile_seconds']:.0f} s |")
    for r in rows:
        profile = r.get("profile")
        if profile and "error" in profile:
            lines.append(f"\n{r['model']} {r['dtype']}, no profile summary: {profile['error']}")
        elif profile:
            shares = ", ".join(f"{kind} {100 * share:.0f}%" for kind, share in profile["share_by_kind"].items())
            lines.append(f"\n{r['model']} {r['dtype']}, traced {profile['traced_ms_per_step']:.1f} ms a step: {shares}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated, of: " + ", ".join(MODELS)
                        + f" (default: {', '.join(CPU_MODELS)} on a CPU, {', '.join(ACCELERATOR_MODELS)} elsewhere)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--remat", default="none", help="none, dots or full")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the first")
    parser.add_argument("--profile", default="", help="write a jax.profiler trace of each run under this folder")
    parser.add_argument("--out", default="", help="also append the JSON lines to this file")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else (
        CPU_MODELS if jax.default_backend() == "cpu" else ACCELERATOR_MODELS)
    rows = []
    for name in models:
        for dtype in args.dtypes.split(","):
            rows.append(measure(name, dtype, args.remat, args.steps, args.profile))
            sized_models.emit(rows[-1], args.out)
    print(markdown(rows))


if __name__ == "__main__":
    main()
