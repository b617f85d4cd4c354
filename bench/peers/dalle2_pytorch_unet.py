"""dalle2-pytorch's decoder UNet, one training step timed on this CPU; prints one JSON object.

Run by `bench/peers/unet_cpu.py` with the peer's own Python (`.peers/dalle2-pytorch`, which that script
installs); not importable from this project's environment. `Unet(dim=64, dim_mults=(1, 2, 4))` conditioned on
a 256-dimensional image embedding, 32×32 images, mean-squared error on the noise, AdamW. Model FLOPs are
3 × the forward pass's, by PyTorch's own counter (`torch.utils.flop_counter.FlopCounterMode`), as
`unet_cpu.py` counts this project's side; its count of a whole step is reported beside them.

  .peers/dalle2-pytorch/bin/python bench/peers/dalle2_pytorch_unet.py --batch 8 --steps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from dalle2_pytorch import Unet
from torch.utils.flop_counter import FlopCounterMode

import dalle2_pytorch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    unet = Unet(dim=64, image_embed_dim=256, channels=3, dim_mults=(1, 2, 4), cond_on_image_embeds=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    images = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    embeddings = torch.randn(args.batch, 256)

    def step():
        times = torch.randint(0, 1000, (args.batch,))
        noise = torch.randn_like(images)
        predicted = unet(images + noise, times, image_embed=embeddings)
        loss = torch.nn.functional.mse_loss(predicted, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    with FlopCounterMode(display=False) as forward_counter, torch.no_grad():
        unet(images, torch.zeros(args.batch, dtype=torch.long), image_embed=embeddings)
    with FlopCounterMode(display=False) as step_counter:
        step()  # also the first call, untimed
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = 3 * forward_counter.get_total_flops()
    print(json.dumps({
        "side": "dalle2-pytorch", "version": getattr(dalle2_pytorch, "__version__", "see pip"),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch,
        "parameters_millions": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
        "seconds_per_step": round(seconds, 4), "mean_seconds_per_step": round(statistics.mean(times), 4),
        "images_per_second": round(args.batch / seconds, 2),
        "gflop_per_step": round(flops / 1e9, 1), "gflop_per_second": round(flops / seconds / 1e9, 1),
        "torch_counted_gflop_per_step": round(step_counter.get_total_flops() / 1e9, 1),
    }))


if __name__ == "__main__":
    main()
