"""Decoder-only oracle accuracy of a trained unCLIP decoder; prints one JSON object.

Decodes the true CLIP image embeddings and captions of the single-object validation scenes
among the first `--prompts` examples, enlarges each image to the data's size by repeating
pixels, and scores it with the oracle, once per sampler. This measures the decoder alone: the
prior's samples lie within cosine 0.98 of the true embeddings and the upsampler is lossless
on shapes (docs/unclip.md). The decoder's config is the one it trained with
(`DIR/decoder/config.json`); `--grid` writes each sampler's first 32 images to
`DIR/decoder_accuracy_SAMPLER.png`.

  python bench/unclip_decoder_accuracy.py --workdir DIR [--prompts 400] [--guidance 2] [--guidance-interval 0,1] [--grid]
      [--samplers dpm_solver_pp:20:quadratic,dpm_solver_pp:20:quadratic:1,ddpm:250:uniform]

A sampler is `SAMPLER:STEPS:SPACING[:ETA]`; η (default 0) is DDIM's, or DPM-Solver++'s noise.
`--guidance-interval LOW,HIGH` guides only at `t / T` in that range (`decoder.sample.guidance_interval`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import numpy as np

from dalle_jax import viz
from dalle_jax.data import pipeline, shapes
from dalle_jax.eval import generation
from dalle_jax.models.pixels import to_uint8
from dalle_jax.tasks.clip import TrainedClip
from dalle_jax.tasks.decoder import DecoderTask
from dalle_jax.train import checkpoint, trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="holds clip/, decoder/ and the text tokenizer")
    parser.add_argument("--prompts", type=int, default=400, help="validation examples to draw the scenes from")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--guidance-interval", default="0,1", help="LOW,HIGH: guide only at t / T in that range")
    parser.add_argument("--samplers", help="comma-separated SAMPLER:STEPS:SPACING[:ETA]",
                        default="dpm_solver_pp:20:quadratic,dpm_solver_pp:20:quadratic:1,ddpm:250:uniform")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", action="store_true")
    args = parser.parse_args()
    interval = tuple(float(x) for x in args.guidance_interval.split(","))

    workdir = pathlib.Path(args.workdir)
    config = trainer.run_config(workdir / "decoder", " (python run.py train-decoder)")
    task = DecoderTask.from_config(config, workdir)
    params = trainer.load_variables(config, workdir / "decoder", task)["params"]

    source = pipeline.load_sources(config.data)["validation"]
    indices = [i for i in range(min(args.prompts, len(source))) if int(source[i]["num_objects"]) == 1]
    scenes = [shapes.Scene.from_features(source[i], config.data.image_size) for i in indices]
    embeddings = TrainedClip.load(workdir).embedders()[0](np.stack([source[i]["image"] for i in indices]))
    captions = task.text_tokenizer.encode([s.describe() for s in scenes], config.text.max_length)
    factor = config.data.image_size // config.decoder.image_size

    results = {}
    for spec in args.samplers.split(","):
        name, steps, spacing, *eta = spec.split(":")
        eta = float(eta[0]) if eta else 0.0
        decoder = task.with_sample(sampler=name, num_steps=int(steps), spacing=spacing, eta=eta,
                                   guidance_scale=args.guidance, guidance_interval=interval)
        noise = jax.random.normal(jax.random.key(args.seed), decoder.noise_shape(len(scenes)))
        sample = decoder.sample.lower(params, embeddings, captions, noise, jax.random.key(args.seed + 1)).compile()
        start = time.perf_counter()
        small = np.asarray(to_uint8(sample(params, embeddings, captions, noise, jax.random.key(args.seed + 1))))
        seconds = time.perf_counter() - start
        images = small.repeat(factor, axis=1).repeat(factor, axis=2)
        summary = generation.score_images(images, scenes)["all"]
        run = f"{name}_{steps}_{spacing}" + (f"_eta{eta:g}" if eta else "")
        results[run] = {key: summary[key] for key in ("colour", "shape", "size", "all_correct")}
        results[run]["sampling_seconds"] = seconds
        if args.grid:
            viz.save_grid(workdir / f"decoder_accuracy_{run}.png", images[:32],
                          [s.describe() for s in scenes[:32]])

    step = checkpoint.latest_step(workdir / "decoder" / "checkpoints")
    print(json.dumps({"workdir": str(workdir), "decoder_step": step,
                      "device": jax.devices()[0].device_kind, "num_prompts": len(scenes),
                      "guidance_scale": args.guidance, "guidance_interval": interval, "samplers": results}, indent=2))


if __name__ == "__main__":
    main()
