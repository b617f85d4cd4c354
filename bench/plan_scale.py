"""The papers' scale, planned by compilation: the training step of the 12B DALL·E and of a
3.5B-class unCLIP decoder, compiled ahead of time for meshes of 64 and 256 devices, with XLA's
memory analysis of what one device holds.

  python bench/plan_scale.py                                   # every plan below; JSON lines, then a table
  python bench/plan_scale.py --models dalle_12b --meshes 1x64x1 --remat full
  python bench/plan_scale.py --tpu v5p:4x4x4                   # with libtpu: compiled for a TPU topology
  python bench/plan_scale.py --models dalle_1.3b_float32 --meshes 1x1x1 --remat none,dots  # bench/scale.py's sizes

Nothing is allocated: the state and the batch are abstract (`jax.ShapeDtypeStruct`s with their
shardings), and `jit(step).lower(...).compile()` runs for fake CPU devices
(`--xla_force_host_platform_device_count`), or, with `--tpu`, for a TPU topology description
(`jax.experimental.topologies`; needs `pip install -e '.[tpu]'`). The step is the trainer's own
(`trainer.make_step_fn`: loss, gradient, AdamW, the default sharding rules). Per device, each
plan reports the bytes of parameters and optimizer state (from their shardings), XLA's
temporaries (activations and workspace) and the peak (arguments + outputs − donated + temporaries),
against 80 GB (H100) and 141 GB (H200); for a TPU, whether its compiler fitted the step into the chip's
HBM (it refuses one that does not, naming the bytes it needed). A CPU compile schedules memory as XLA:CPU
does, not as a GPU's compiler would: read its temporaries as an estimate of the order, not to the gigabyte.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import pathlib
import re
import sys
import time

DEVICES = 256
if "--tpu" not in sys.argv:  # fake CPU devices: set before JAX starts
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import jax  # noqa: E402

import scale  # noqa: E402
import sized_models  # noqa: E402
from dalle_jax.train import optim, partitioning, trainer  # noqa: E402

GB = 1e9
# (data, fsdp, tensor) meshes: FSDP alone, and FSDP with 8-way tensor parallelism (one 8-GPU host).
# v5p and v5e: HBM a chip, GiB (Google Cloud's TPU pages). The TPU compiler itself refuses a step that does not fit.
TPU_HBM_GIB = {"TPU v5": 95, "TPU v5 lite": 16}
MESHES = ((1, 64, 1), (1, 8, 8), (4, 64, 1), (1, 32, 8))
REMAT = ("none", "dots", "full")


def dalle_12b(remat: str, scan_layers: bool = True):
    """The paper's transformer (`configs/shapes_dalle.py:paper`: 64 layers, width 3,968, 62 heads,
    [256 text ; 32×32 image tokens], 16,384 text and 8,192 image codes, sparse masks, bfloat16
    compute) at the paper's batch of 1,024."""
    return sized_models.dalle({"remat": remat, "scan_layers": scan_layers}, 1024)


def decoder_3_5b(remat: str, scan_layers: bool = True):
    """A GLIDE-sized unCLIP decoder (Ramesh et al. 2022, appendix C: 3.5B, 64 px): UNet width 512 ×
    (1, 2, 3, 4), 3 blocks a level, attention at 32, 16 and 8, a 24-layer caption transformer of
    width 2,048, bfloat16 compute, the paper's batch of 2,048. Its layers are not scanned."""
    del scan_layers
    return sized_models.decoder(dict(base_channels=512, channel_mults=(1, 2, 3, 4), num_res_blocks=3,
                                     attention_resolutions=(32, 16, 8), num_heads=8, embed_dim=2048, text_width=2048,
                                     text_depth=24, num_clip_tokens=4, dtype="bfloat16", remat=remat), 2048)


def accelerator_size(name: str, dtype: str, remat: str, scan_layers: bool = True):
    """One of `bench/scale.py`'s accelerator sizes in `dtype`, for one GPU's memory (`--meshes 1x1x1`); its
    transformers are always scanned."""
    del scan_layers
    return scale.build(name, dtype, remat)


MODELS = {"dalle_12b": dalle_12b, "decoder_3.5b": decoder_3_5b}
PAPER_MODELS = tuple(MODELS)
MODELS |= {f"{name}_{dtype}": functools.partial(accelerator_size, name, dtype)
           for name in scale.ACCELERATOR_MODELS for dtype in ("float32", "bfloat16")}


def _bytes_per_device(abstract) -> float:
    """Bytes one device holds of a tree of sharded `ShapeDtypeStruct`s (the most loaded device)."""
    return sum(math.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(abstract))


def plan(model: str, mesh_shape: tuple[int, int, int], remat: str, devices, scan_layers: bool = True) -> dict:
    config, task, example = MODELS[model](remat, scan_layers)
    mesh = partitioning.make_mesh(dict(zip(partitioning.MESH_AXES, mesh_shape)), devices[: math.prod(mesh_shape)])
    optimizer = optim.make_optimizer(config.optim, config.train.steps)
    _, shardings, abstract = trainer.sharded_state_layout(config, task, optimizer, example, mesh)
    step = trainer.make_step_fn(task, optimizer, mesh, partitioning.rules_from_config(config.sharding.rules), shardings)
    batch_sharding = partitioning.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct((config.train.batch_size, *v.shape), v.dtype, sharding=batch_sharding)
             for k, v in example.items()}
    row = {
        "model": model, "mesh": "x".join(map(str, mesh_shape)), "devices": math.prod(mesh_shape), "remat": remat,
        "scan_layers": config.get("model", {}).get("scan_layers", False),
        "platform": devices[0].platform, "device_kind": devices[0].device_kind,
        "parameters_billions": round(sum(math.prod(a.shape) for a in jax.tree.leaves(abstract.params)) / 1e9, 2),
        "global_batch": config.train.batch_size,
        "batch_per_data_shard": config.train.batch_size // (mesh_shape[0] * mesh_shape[1]),
        "params_gb": round(_bytes_per_device(abstract.params) / GB, 2),
        "opt_state_gb": round(_bytes_per_device(abstract.opt_state) / GB, 2),
    }
    hbm = TPU_HBM_GIB.get(devices[0].device_kind)
    start = time.perf_counter()
    try:
        memory = step.lower(abstract, batch).compile().memory_analysis()
    except jax.errors.JaxRuntimeError as error:  # a TPU compile that does not fit the chip's HBM says so
        needed = re.search(r"temporaries \(([\d.]+)G\)", str(error))
        if hbm is None or "RESOURCE_EXHAUSTED" not in str(error) or not needed:
            raise
        return row | {"temporaries_gb": float(needed.group(1)), "peak_gb": None, "tpu_hbm_gib": hbm,
                      "fits_tpu_hbm": False, "compile_seconds": round(time.perf_counter() - start, 1)}
    seconds = time.perf_counter() - start
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes)
    return row | {
        "temporaries_gb": round(memory.temp_size_in_bytes / GB, 2), "peak_gb": round(peak / GB, 2),
        "fits_80gb": peak < 80 * GB, "fits_141gb": peak < 141 * GB,
        **({"tpu_hbm_gib": hbm, "fits_tpu_hbm": True} if hbm else {}),  # it compiled
        "compile_seconds": round(seconds, 1),
    }


def tpu_devices(topology: str):
    """The devices of a TPU topology description (e.g. `v5p:4x4x4`), compiled for without a TPU."""
    from jax.experimental import topologies

    return topologies.get_topology_desc(topology, "tpu").devices


def markdown(rows: list[dict]) -> str:
    lines = ["| model | devices | mesh (data×fsdp×tensor) | remat | params + Adam / device | temporaries "
             "| peak / device | fits | compile |", "|---|---|---|---|---|---|---|---|---|"]
    yes = lambda fits: "yes" if fits else "no"
    for r in rows:
        fits = (f"{r['tpu_hbm_gib']} GiB: {yes(r['fits_tpu_hbm'])}" if "tpu_hbm_gib" in r else
                f"80 GB: {yes(r['fits_80gb'])}, 141 GB: {yes(r['fits_141gb'])}")
        peak = "—" if r["peak_gb"] is None else f"{r['peak_gb']:.1f} GB"
        lines.append(f"| {r['model']} | {r['devices']} {r['device_kind']} | {r['mesh']} | {r['remat']} "
                     f"| {r['params_gb'] + r['opt_state_gb']:.1f} GB | {r['temporaries_gb']:.1f} GB | {peak} | {fits} "
                     f"| {r['compile_seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(PAPER_MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--meshes", default=",".join("x".join(map(str, m)) for m in MESHES),
                        help="comma-separated DATAxFSDPxTENSOR")
    parser.add_argument("--remat", default=",".join(REMAT), help="comma-separated policies: " + ", ".join(REMAT))
    parser.add_argument("--tpu", default="", help="a TPU topology (v5e:8x8, v5p:4x4x4) in place of CPU devices")
    parser.add_argument("--unscanned", action="store_true", help="DALL·E's 64 layers unrolled, not scanned")
    parser.add_argument("--out", default="", help="also write the JSON lines to this file")
    args = parser.parse_args()
    devices = tpu_devices(args.tpu) if args.tpu else jax.devices()
    rows = []
    for model in args.models.split(","):
        for mesh in args.meshes.split(","):
            shape = tuple(int(n) for n in mesh.split("x"))
            if math.prod(shape) > len(devices):
                continue
            for remat in args.remat.split(","):
                rows.append(plan(model, shape, remat, devices, scan_layers=not args.unscanned))
                sized_models.emit(rows[-1], args.out)
    print(markdown(rows))


if __name__ == "__main__":
    main()
