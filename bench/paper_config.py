"""The paper's configuration on this machine: OpenAI's dVAE encoding 256-px images and the
transformer's training step over [256 text ; 32×32 image tokens] with 8,192 codes.

  python bench/paper_config.py            # configs/own_data_dalle.py:paper; about 5 minutes on 2 cores
  python bench/paper_config.py --batch 8  # the transformer step at another batch size

Prints JSON: for the dVAE encode (`--encode-batch` images a call) and the transformer's step
(gradient and AdamW update, the trainer's `train_step`, at the config's batch size), seconds a
call after compiling (`seconds_per_step`), images/s, the compile time, and the peak memory of a
process that runs that one measurement alone. The weights are random: the released architecture and sizes, so the
cost is the released models' (the weights are not downloaded here).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from data_throughput import timed  # noqa: E402  (seconds a step after compiling, images/s, peak memory)

CONFIG = str(REPO / "configs/own_data_dalle.py:paper")


def dvae_encode(batch_size: int, repeats: int) -> dict:
    """The released dVAE's `encode` of 256-px uint8 images, as the token cache runs it."""
    import flax.linen as nn
    import jax

    from dalle_jax.config import load_config
    from dalle_jax.tasks.image_tokenizer import build_image_tokenizer

    config = load_config(CONFIG)
    model = build_image_tokenizer(config.image_tokenizer)
    size = config.data.image_size
    images = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    variables = nn.unbox(jax.jit(model.init)(jax.random.key(0), images[:1]))
    encode = jax.jit(lambda v, x: model.apply(v, x, method="encode"))
    return timed(lambda: encode(variables, images), repeats, batch_size)


def transformer_step(batch_size: int, repeats: int) -> dict:
    """One training step of the config's transformer (text and image cross-entropy, AdamW)."""
    import flax.linen as nn
    import jax

    from dalle_jax.config import load_config
    from dalle_jax.tasks.dalle import DalleTask, build_transformer
    from dalle_jax.tasks.image_tokenizer import downsample_factor
    from dalle_jax.train import optim
    from dalle_jax.train.state import create_state, train_step

    config = load_config(CONFIG, {"train.batch_size": batch_size})
    grid = config.data.image_size // downsample_factor(config.image_tokenizer)
    model = build_transformer(config, config.text.vocab_size, (grid, grid))
    task = DalleTask(model, None, None, None, None, config)
    rng = np.random.default_rng(0)
    batch = {"text": rng.integers(0, config.text.vocab_size, (batch_size, config.text.max_length), dtype=np.int32),
             "image_tokens": rng.integers(0, config.image_tokenizer.num_codes, (batch_size, grid * grid),
                                          dtype=np.int32)}
    optimizer = optim.make_optimizer(config.optim, config.train.steps)
    init_batch = {k: v[:1] for k, v in batch.items()}
    state = jax.jit(lambda key: create_state(nn.unbox(task.init(key, init_batch)), optimizer, key))(jax.random.key(0))
    step = jax.jit(lambda s, b: train_step(s, b, jax.random.key(1), loss_fn=task.loss_fn, optimizer=optimizer),
                   donate_argnums=0)
    holder = {"state": state}

    def call():
        holder["state"], metrics = step(holder["state"], batch)
        return metrics

    result = timed(call, repeats, batch_size)
    result["parameters_millions"] = round(sum(x.size for x in jax.tree.leaves(state.params)) / 1e6, 1)
    result["sequence"] = {"text_tokens": config.text.max_length, "image_tokens": grid * grid,
                          "image_codes": config.image_tokenizer.num_codes}
    return result


MEASUREMENTS = {"dvae_encode": dvae_encode, "transformer_step": transformer_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=0, help="transformer batch (default: the config's)")
    parser.add_argument("--encode-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        batch = args.encode_batch if args.only == "dvae_encode" else args.batch
        print(json.dumps(MEASUREMENTS[args.only](batch, args.repeats)))
        return

    import jax

    from dalle_jax.config import load_config

    batch = args.batch or load_config(CONFIG).train.batch_size
    report = {"config": "configs/own_data_dalle.py:paper", "machine": f"{platform.machine()}, "
              f"{len(jax.devices())} {jax.devices()[0].platform} device(s)", "cpu_count": os.cpu_count()}
    for name in MEASUREMENTS:  # each in its own process: its own peak memory
        command = [sys.executable, __file__, "--only", name, "--repeats", str(args.repeats), "--batch", str(batch),
                   "--encode-batch", str(args.encode_batch)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        report[name] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
