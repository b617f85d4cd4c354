"""Building a data set of your own, and reading it back, against what training asks of it.

  python bench/data_throughput.py                 # 400 photo-sized images per source kind
  python bench/data_throughput.py --images 1600 --demand none     # peak memory against size

Prints JSON:
- `build`: per source kind (folder, webdataset, parquet) and stored format (JPEG q95, PNG), the
  build's rate in images/s with every core decoding, its peak memory, and the stored bytes per
  image; each build runs in its own process. The fixtures are photo-sized (480×640 to 768×1024,
  JPEG) pictures with texture, written once under --dir.
- `pipeline`: decoded 256-px images/s out of the grain pipeline into global batches of 16, with
  0 and 2 grain worker processes.
- `demand`: images/s that the 256-px config's training steps consume on this machine
  (`configs/own_data_dalle.py`: the VQ-VAE's step at batch 16 and the transformer's at batch 8;
  the transformer reads cached image tokens, but the pipeline decodes each example's image all
  the same).
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def photo(seed: int) -> bytes:
    """A photo-sized JPEG with smooth shading and fine texture (what a camera's JPEG costs to decode)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    height, width = [(480, 640), (768, 1024), (640, 480), (600, 800)][seed % 4]
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([127 + 100 * np.sin(4 * x * (c + 1) + 3 * y + rng.random() * 6) for c in range(3)], -1)
    image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_fixtures(root: pathlib.Path, count: int) -> dict[str, str]:
    """The same `count` pairs as a folder, one tar and one parquet file; their `KIND:PATH`s."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sources = {"folder": f"folder:{root / 'folder'}", "webdataset": f"webdataset:{root / 'shards'}/*.tar",
               "parquet": f"parquet:{root / 'rows'}/*.parquet"}
    if (root / "done").exists() and json.loads((root / "done").read_text()) == count:
        return sources
    for sub in ("folder", "shards", "rows"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True)
    pairs = [(f"{i:09d}", photo(i), f"a textured picture number {i}") for i in range(count)]
    for key, image, caption in pairs:
        (root / "folder" / f"{key}.jpg").write_bytes(image)
        (root / "folder" / f"{key}.txt").write_text(caption)
    with tarfile.open(root / "shards" / "00000.tar", "w") as tar:
        for key, image, caption in pairs:
            for name, data in ((f"{key}.jpg", image), (f"{key}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"key": [p[0] for p in pairs], "jpg": [p[1] for p in pairs],
                             "txt": [p[2] for p in pairs]}), root / "rows" / "00000.parquet", row_group_size=256)
    (root / "done").write_text(json.dumps(count))
    return sources


def data_config(source: str, name: str, data_dir: pathlib.Path, image_format: str = "jpeg", image_size: int = 256):
    from dalle_jax.config import load_config

    return load_config(str(REPO / "configs/own_data_dalle.py"), {
        "data.source": source, "data.name": name, "data.data_dir": str(data_dir), "data.image_format": image_format,
        "data.image_size": image_size, "data.build_workers": -1}).data


def build_one(source: str, name: str, data_dir: str, image_format: str) -> dict:
    """One build, in this process (the parent runs each in its own process)."""
    from dalle_jax.data import ingest

    config = data_config(source, name, pathlib.Path(data_dir), image_format)
    tick = time.perf_counter()
    report = ingest.build(config)
    seconds = time.perf_counter() - tick
    kept = sum(report["examples"].values())
    stored = sum(f.stat().st_size for f in ingest.dataset_dir(config).glob("*.array_record*"))
    return {"images": kept, "seconds": round(seconds, 2), "images_per_second": round(kept / seconds, 1),
            "stored_bytes_per_image": round(stored / kept),
            "peak_rss_mb": peak_rss_mb()}  # the reading process; each worker holds one image at a time


def peak_rss_mb() -> int:
    """This process's peak resident memory (`VmHWM`: unlike `ru_maxrss`, not inherited from the parent)."""
    status = pathlib.Path("/proc/self/status").read_text()
    return round(int(status.split("VmHWM:")[1].split()[0]) / 1024)


def pipeline_rate(source: str, data_dir: pathlib.Path, workers: int, batches: int = 20) -> float:
    """Decoded images/s into global batches of 16, after one warm-up batch."""
    from dalle_jax.data import pipeline
    from dalle_jax.train import partitioning

    config = data_config(source, "bench_jpeg", data_dir)
    train = pipeline.load_sources(config)["train"]
    sharding = partitioning.batch_sharding(partitioning.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}))
    stream = pipeline.ShardedBatches(train, lambda e, rng: {"image": e["image"]}, global_batch_size=16,
                                     sharding=sharding, seed=0, worker_count=workers)
    next(stream)["image"].block_until_ready()
    tick = time.perf_counter()
    for _ in range(batches):
        next(stream)["image"].block_until_ready()
    return round(16 * batches / (time.perf_counter() - tick), 1)


def step_demand(variant: str, steps: int = 2) -> dict:
    """Images/s that the config's image tokenizer and transformer steps consume at their own
    batch sizes (the gradient alone, after compiling), and the step's peak memory."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from dalle_jax.config import load_config, stage_config
    from dalle_jax.models.dalle import teacher_forced_logits
    from dalle_jax.tasks.dalle import build_transformer
    from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask, downsample_factor

    config = load_config(str(REPO / f"configs/own_data_dalle.py:{variant}"))
    size, result = config.data.image_size, {"variant": variant}
    staged = stage_config(config, "image_tokenizer")
    task = ImageTokenizerTask.from_config(staged)
    batch_size = staged.train.batch_size
    batch = {"image": np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)}
    variables = nn.unbox(task.init(jax.random.key(0), batch))
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    grad = jax.jit(jax.grad(lambda p, b, r: task.loss_fn(p, b, r, step=0, model_state=state)[0]))
    result["image_tokenizer_step"] = timed(lambda: grad(params, batch, jax.random.key(1)), steps, batch_size)

    grid = size // downsample_factor(config.image_tokenizer)
    model = build_transformer(config, text_vocab_size=config.text.vocab_size, grid_size=(grid, grid))
    tokens = jnp.zeros((config.train.batch_size, config.text.max_length + grid * grid), jnp.int32)
    params = nn.unbox(model.init(jax.random.key(0), tokens[:1, :-1]))["params"]

    def loss(p, t):
        text_logits, image_logits = teacher_forced_logits(model, p, t)
        return optax.softmax_cross_entropy_with_integer_labels(image_logits, t[:, config.text.max_length:]).mean()

    grad = jax.jit(jax.grad(loss))
    result["transformer_step"] = timed(lambda: grad(params, tokens), steps, config.train.batch_size)
    return result


def timed(step, steps: int, batch_size: int) -> dict:
    import jax

    tick = time.perf_counter()
    jax.block_until_ready(step())
    compile_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(step())
    seconds = (time.perf_counter() - tick) / steps
    return {"batch_size": batch_size, "seconds_per_step": round(seconds, 2),
            "images_per_second": round(batch_size / seconds, 2), "compile_seconds": round(compile_seconds, 1),
            "peak_rss_gb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--dir", default="/tmp/dalle_jax_data_bench")
    parser.add_argument("--build-one", nargs=4, metavar=("SOURCE", "NAME", "DATA_DIR", "FORMAT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--demand", default="default", help="the own_data_dalle.py variant whose training steps' "
                        "demand is measured (default: about 12 GB and 5 minutes on 2 cores); 'none' leaves it out")
    args = parser.parse_args()
    if args.build_one:
        print(json.dumps(build_one(*args.build_one)))
        return

    root = pathlib.Path(args.dir)
    sources = write_fixtures(root, args.images)
    data_dir = root / f"data_{args.images}"
    shutil.rmtree(data_dir, ignore_errors=True)
    report = {"images": args.images, "fixture_bytes_per_image": round(
        sum(f.stat().st_size for f in (root / "folder").glob("*.jpg")) / args.images), "build": {}}
    for kind, source in sources.items():
        for image_format in (("jpeg", "png") if kind == "folder" else ("jpeg",)):
            name = f"bench_{kind}_{image_format}" if kind != "folder" or image_format != "jpeg" else "bench_jpeg"
            out = subprocess.run([sys.executable, __file__, "--build-one", source, name, str(data_dir), image_format],
                                 capture_output=True, text=True, check=True, cwd=REPO).stdout
            report["build"][f"{kind}_{image_format}"] = json.loads(out.strip().splitlines()[-1])
    report["pipeline"] = {f"{w}_workers_images_per_second": pipeline_rate(sources["folder"], data_dir, w)
                          for w in (0, 2)}
    if args.demand != "none":
        report["demand"] = step_demand(args.demand)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
