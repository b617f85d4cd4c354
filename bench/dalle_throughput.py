"""DALL·E transformer throughput on this machine; prints one JSON object.

Fixed model: dim 256, depth 4, 8 heads of 32, 32 text tokens over 1,024, 16x16 image
tokens over 512, batch 8 (`--batch`). Reports training tokens/s and model-FLOPs utilisation against
the matmul peak measured in the same run, sampling tokens/s with the key/value cache and
without it (recomputing the prefix each step), and peak memory.

  python bench/dalle_throughput.py [--steps 20] [--dtype float32|bfloat16] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dalle_jax.models.dalle import DalleTransformer, sample_image_tokens
from dalle_jax.nn import masks
from dalle_jax.train.state import create_state, train_step

TEXT_LENGTH, TEXT_VOCAB, GRID, IMAGE_VOCAB = 32, 1024, (16, 16), 512
EMBED, DEPTH, HEADS, HEAD_DIM = 256, 4, 8, 32


def timed(fn, *args, repeats: int) -> float:
    """Seconds per call after one compile-and-warm-up call."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def matmul_peak_flops(dtype) -> float:
    """FLOP/s of one large square matrix product on random data (zeros can run faster than real data)."""
    size = 1024 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    seconds = timed(jax.jit(lambda x: x @ x), a, repeats=10)
    return 2 * size**3 / seconds


def compiled_flops(compiled) -> float:
    """FLOPs of one call of a compiled (`jax.jit(f).lower(...).compile()`) program, as XLA counts them."""
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    dtype, batch = jnp.dtype(args.dtype), args.batch
    model = DalleTransformer(text_vocab_size=TEXT_VOCAB, image_vocab_size=IMAGE_VOCAB, text_length=TEXT_LENGTH,
                             grid_size=GRID, embed_dim=EMBED, depth=DEPTH, num_heads=HEADS, head_dim=HEAD_DIM,
                             mlp_dim=4 * EMBED, attention_kinds=masks.layer_kinds("sparse", DEPTH), dtype=dtype)
    num_image = GRID[0] * GRID[1]
    rng = np.random.default_rng(0)
    text = jnp.asarray(rng.integers(4, TEXT_VOCAB, (batch, TEXT_LENGTH)), jnp.int32)
    image = jnp.asarray(rng.integers(0, IMAGE_VOCAB, (batch, num_image)), jnp.int32)
    sequence = jnp.concatenate([text, image], axis=1)
    params = nn.unbox(model.init(jax.random.key(0), sequence[:, :-1]))["params"]

    def loss_fn(params, tokens, rng, *, step, model_state):
        del rng, step
        hidden = model.apply({"params": params}, tokens[:, :-1])
        logits = model.apply({"params": params}, hidden[:, TEXT_LENGTH - 1:], method="image_logits")
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, TEXT_LENGTH:]).mean()
        return loss, {}, model_state

    optimizer = optax.adamw(1e-4)
    state = create_state({"params": params}, optimizer, jax.random.key_data(jax.random.key(0)))
    step = jax.jit(lambda s, b: train_step(s, b, jax.random.key(1), loss_fn=loss_fn, optimizer=optimizer))
    step_seconds = timed(step, state, sequence, repeats=args.steps)

    seq_len = TEXT_LENGTH + num_image - 1
    tokens_per_step = batch * seq_len
    embedding_params = TEXT_VOCAB * EMBED + IMAGE_VOCAB * EMBED + (TEXT_LENGTH * 2 + sum(GRID)) * EMBED
    matmul_params = sum(x.size for x in jax.tree.leaves(params)) - embedding_params
    # 6 N per token for the weight matmuls (forward + backward), plus dense attention
    # scores and mixing: 2 matmuls x 2 FLOPs x seq x (heads x head_dim) per token per layer, x3 for backward.
    flops_per_token = 6 * matmul_params + 12 * DEPTH * seq_len * HEADS * HEAD_DIM
    peak = matmul_peak_flops(dtype)
    achieved = flops_per_token * tokens_per_step / step_seconds

    sample = lambda use_cache: jax.jit(lambda p, t, k: sample_image_tokens(model, p, t, k, use_cache=use_cache))
    cached_seconds = timed(sample(True), params, text, jax.random.key(2), repeats=3)
    uncached_seconds = timed(sample(False), params, text, jax.random.key(2), repeats=1)

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    print(json.dumps({
        "device": f"{device.platform}:{device.device_kind}", "num_devices": jax.device_count(), "dtype": str(dtype),
        "config": {"embed_dim": EMBED, "depth": DEPTH, "heads": HEADS, "head_dim": HEAD_DIM, "text_tokens": TEXT_LENGTH,
                   "text_vocab": TEXT_VOCAB, "image_grid": list(GRID), "image_vocab": IMAGE_VOCAB, "batch": batch},
        "params": int(sum(x.size for x in jax.tree.leaves(params))),
        "train_step_ms": 1e3 * step_seconds,
        "train_tokens_per_sec": tokens_per_step / step_seconds,
        "model_tflops_per_sec": achieved / 1e12,
        "matmul_peak_tflops_per_sec": peak / 1e12,
        "mfu": achieved / peak,
        "sample_tokens_per_sec_cached": batch * num_image / cached_seconds,
        "sample_tokens_per_sec_uncached": batch * num_image / uncached_seconds,
        "cache_speedup": uncached_seconds / cached_seconds,
        "peak_device_memory_mb": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
        "peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, indent=2))


if __name__ == "__main__":
    main()
