"""Single-object oracle accuracy of the whole unCLIP chain, plain and with CLIP keeping the best
of k draws; prints one JSON object.

For each single-object validation scene among the first `--prompts` examples, draws
`--candidates` prior embeddings and small images (the config's prior and decoder samplers),
each draw from its own keys. For each k in 1, 2, 4, ... below `--candidates` and for `--candidates` itself, CLIP keeps the
draw of the first k nearest the prompt (`rerank.best_of_candidates`, as `decoder.sample.candidates
= k` does), and the upsamplers' images of those picks are scored by the oracle at full size.
`any_of_k` is the share of scenes with at least one all-correct draw among the first k, the
small images scored with each pixel repeated: what a perfect reranker could reach.

  python bench/unclip_best_of.py --workdir DIR [--prompts 500] [--candidates 16] [--grid] [--save]
      [--guidance 3] [--guidance-interval 0,0.7]

`DIR` holds a trained unCLIP (docs/unclip.md); the config is the decoder's
(`DIR/decoder/config.json`), whose decoder guidance scale and interval the last two flags
replace. `--grid` writes the plain and best-of-`--candidates` images of the first 32 scenes to
`DIR/best_of_K.png`; `--save` keeps every draw in `DIR/best_of_draws.npz`
(`small` uint8 `[scenes, draws, s, s, 3]`, their prior `embeddings`, the oracle's `correct`
`[draws, scenes]` and the `prompts`), to compare ways of choosing among them offline.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import numpy as np
import tqdm

from dalle_jax import viz
from dalle_jax.data import pipeline
from dalle_jax.eval import generation, oracle, rerank
from dalle_jax.models.pixels import to_uint8, to_unit_range
from dalle_jax.pipelines.unclip import Unclip
from dalle_jax.train import trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="holds clip/, prior_KIND/, decoder/ and the upsamplers")
    parser.add_argument("--prompts", type=int, default=500, help="validation examples to draw the scenes from")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--save", action="store_true", help="keep every draw in DIR/best_of_draws.npz")
    parser.add_argument("--guidance", type=float, help="the decoder's guidance scale (default: its config's)")
    parser.add_argument("--guidance-interval", help="LOW,HIGH: guide the decoder only at t / T in that range")
    args = parser.parse_args()

    workdir = pathlib.Path(args.workdir)
    config = trainer.run_config(workdir / "decoder", " (python run.py train-decoder)")
    if args.guidance is not None:
        config.decoder.sample.guidance_scale = args.guidance
    if args.guidance_interval:
        config.decoder.sample.guidance_interval = tuple(float(x) for x in args.guidance_interval.split(","))
    unclip = Unclip.load(config, workdir)

    source = pipeline.load_sources(config.data)["validation"]
    scenes = [scene for scene in generation.prompt_scenes(source, args.prompts, config.data.image_size)
              if len(scene.objects) == 1]
    prompts = [scene.describe() for scene in scenes]
    captions, text_embeddings = unclip.captions(prompts), unclip.text_embeddings(prompts)
    factor = config.data.image_size // config.decoder.image_size

    start = time.perf_counter()
    draws, embedded, correct = [], [], []  # per draw: small images in [-1, 1], prior embeddings, oracle all-correct
    for draw in tqdm.trange(args.candidates, desc="prior and decoder draws", unit="draw"):
        prior_key, noise_key, decoder_key = jax.random.split(jax.random.fold_in(jax.random.key(args.seed), draw), 3)
        embeddings = unclip.prior.sample(unclip.params["prior"], captions, text_embeddings, prior_key)
        noise = jax.random.normal(noise_key, unclip.decoder.noise_shape(len(scenes)))
        small = unclip.decoder.sample(unclip.params["decoder"], embeddings, captions, noise, decoder_key)
        enlarged = np.asarray(to_uint8(small)).repeat(factor, axis=1).repeat(factor, axis=2)
        draws.append(np.asarray(small))
        embedded.append(np.asarray(embeddings))
        correct.append([oracle.score(image, scene)["all_correct"] for image, scene in zip(enlarged, scenes)])
    draws, correct = np.stack(draws, axis=1), np.asarray(correct)  # [scenes, draws, s, s, 3], [draws, scenes]
    draw_seconds = time.perf_counter() - start
    if args.save:
        np.savez_compressed(workdir / "best_of_draws.npz", small=np.asarray(to_uint8(draws)), correct=correct,
                            embeddings=np.stack(embedded, axis=1), prompts=np.asarray(prompts))

    results, picks = {}, {}
    for k in sorted({2 ** i for i in range(args.candidates.bit_length())} | {args.candidates}):
        low_res = draws[:, 0] if k == 1 else rerank.best_of_candidates(draws[:, :k].reshape(-1, *draws.shape[2:]),
                                                                          prompts, *unclip.clip.embedders())
        images = unclip.upsample(to_unit_range(to_uint8(low_res)), jax.random.key(args.seed + 2),
                                 jax.random.key(args.seed + 1))  # every k from the same noise
        summary = generation.score_images(images, scenes)["all"]
        results[f"best_of_{k}"] = {key: summary[key] for key in ("colour", "shape", "size", "count", "all_correct")}
        results[f"best_of_{k}"]["any_of_k"] = float(correct[:k].max(axis=0).mean())
        picks[k] = images
    if args.grid:
        for k in (1, args.candidates):
            viz.save_grid(workdir / f"best_of_{k}.png", picks[k][:32], prompts[:32])

    print(json.dumps({"workdir": str(workdir), "prior": config.prior.kind, "num_scenes": len(scenes),
                      "candidates": args.candidates, "decoder_sample": config.decoder.sample.to_dict(),
                      "draw_seconds": draw_seconds, "device": jax.devices()[0].device_kind, "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
