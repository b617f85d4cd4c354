"""Ways of choosing among the saved draws of `bench/unclip_best_of.py --save`, scored by the
oracle after the upsampler; prints one JSON object.

Upsamples every draw in `DIR/best_of_draws.npz` (one upsampler noise for all draws of a scene,
as `unclip_best_of.py` does for its picks), scores each at full size with the oracle, and for
k = 1, 2, 4, ... draws per scene reports the all-correct share of the draw that each rule keeps:

- `clip_small`: CLIP's cosine with the prompt on the decoder's image (the pipeline's rule,
  `decoder.sample.candidates`);
- `clip_full`: the same on the upsampled image (k upsamplings per prompt, not one);
- `captioner_small`, `captioner_full`: log p(prompt | image) under the descriptive captioner
  in `DIR/captioner_descriptive` (DALL·E 3's; `python run.py train-captioner --mode alt`,
  then `--mode descriptive`), when there is one;
- `any`: a draw all-correct at full size among the k, what a perfect rule would reach.

  python bench/unclip_rerankers.py --workdir DIR [--prompts 500] [--seed 0]

The scores and upsampled images are kept in `DIR/reranker_scores.npz`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import numpy as np
import tqdm

from dalle_jax.data import pipeline
from dalle_jax.eval import generation, oracle, rerank
from dalle_jax.experiments import dalle3
from dalle_jax.models.pixels import to_unit_range
from dalle_jax.pipelines.unclip import Unclip
from dalle_jax.train import trainer


def kept_share(scores: np.ndarray, correct: np.ndarray, k: int) -> float:
    """The share of scenes whose draw with the highest score among the first `k` is correct
    (`scores [scenes, draws]`, `correct [scenes, draws]`)."""
    return float(correct[np.arange(len(scores)), scores[:, :k].argmax(axis=1)].mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained unCLIP with best_of_draws.npz")
    parser.add_argument("--prompts", type=int, default=500, help="the --prompts of unclip_best_of.py")
    parser.add_argument("--seed", type=int, default=0, help="the --seed of unclip_best_of.py")
    args = parser.parse_args()

    workdir = pathlib.Path(args.workdir)
    draws_file = workdir / "best_of_draws.npz"
    if not draws_file.exists():
        raise FileNotFoundError(f"{draws_file} is missing; run bench/unclip_best_of.py --workdir {workdir} --save")
    config = trainer.run_config(workdir / "decoder", " (python run.py train-decoder)")
    unclip = Unclip.load(config, workdir)
    saved = np.load(draws_file)
    small, prompts = saved["small"], [str(p) for p in saved["prompts"]]  # [scenes, draws, s, s, 3]
    source = pipeline.load_sources(config.data)["validation"]
    scenes = [scene for scene in generation.prompt_scenes(source, args.prompts, config.data.image_size)
              if len(scene.objects) == 1]
    if [scene.describe() for scene in scenes] != prompts:
        raise ValueError(f"{draws_file} holds other scenes than --prompts {args.prompts} gives")

    start = time.perf_counter()  # every draw upsampled from the same noise
    full = np.stack([unclip.upsample(to_unit_range(small[:, d]), jax.random.key(args.seed + 2),
                                     jax.random.key(args.seed + 1))
                     for d in tqdm.trange(small.shape[1], desc="upsampling draws", unit="draw")], axis=1)
    upsample_seconds = time.perf_counter() - start
    correct = np.array([[oracle.score(image, scene)["all_correct"] for image in images]
                        for images, scene in zip(full, scenes)])

    draws = small.shape[1]
    scores = {name: rerank.similarities(images, prompts, *unclip.clip.embedders())
              for name, images in (("clip_small", small), ("clip_full", full))}
    if (workdir / "captioner_descriptive" / "checkpoints").exists():
        captioner_config = trainer.run_config(workdir / "captioner_descriptive")
        task, params = dalle3.trained_captioner(captioner_config, workdir, "descriptive")
        repeated = [prompt for prompt in prompts for _ in range(draws)]
        for name, images in (("captioner_small", small), ("captioner_full", full)):
            scores[name] = task.log_likelihood(params, images.reshape(-1, *images.shape[2:]), repeated).reshape(
                len(prompts), draws)
    np.savez_compressed(workdir / "reranker_scores.npz", full=full, correct=correct, **scores)

    results = {f"best_of_{k}": {**{name: kept_share(s, correct, k) for name, s in scores.items()},
                                "any": float(correct[:, :k].max(axis=1).mean())}
               for k in sorted({2 ** i for i in range(draws.bit_length())} | {draws})}
    print(json.dumps({"workdir": str(workdir), "num_scenes": len(scenes), "draws": draws,
                      "upsample_seconds": upsample_seconds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
