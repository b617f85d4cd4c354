"""DALL·E 2's (unCLIP's) commands: the prior, decoder and upsamplers, and sampling from them or from Karlo's
released weights (--weights)."""

from __future__ import annotations

import dataclasses
import pathlib

from absl import app

from dalle_jax.cli import common
from dalle_jax.cli.common import FLAGS


def _train_stage(config, stage: str, task_class) -> None:
    from dalle_jax.config import stage_config

    config = stage_config(config, stage)
    common.train_task(config, task_class.from_config(config, common.workdir()))


def train_prior(config) -> None:
    from dalle_jax.tasks.prior import PriorTask

    _train_stage(config, "prior", PriorTask)


def train_decoder(config) -> None:
    from dalle_jax.tasks.decoder import DecoderTask

    _train_stage(config, "decoder", DecoderTask)


def train_upsampler(config) -> None:
    from dalle_jax.config import stage_config
    from dalle_jax.tasks.decoder import UpsamplerTask

    task = UpsamplerTask.from_config(config, stage=FLAGS.stage)  # refuses a stage the cascade has not
    staged = stage_config(config, task.name)
    common.train_task(staged, dataclasses.replace(task, config=staged))


def _unclip(config):
    from dalle_jax.pipelines.unclip import Unclip

    try:
        return Unclip.load(config, common.workdir())
    except FileNotFoundError as error:
        raise app.UsageError(str(error))


def evaluation(config):
    """What `eval` needs of the work dir's unCLIP: (generate_batch, rng, the output directory
    `unclip_eval/PRIOR_SAMPLER_STEPS_GUIDANCE...`, CLIP's embedders)."""
    import jax

    unclip = _unclip(config)
    d = config.decoder.sample
    run_name = f"{config.prior.kind}_{d.sampler}{d.num_steps}_guidance{d.guidance_scale:g}"
    if d.eta and d.sampler != "ddpm":  # DDPM has no η
        run_name += f"_eta{d.eta:g}"
    if tuple(d.guidance_interval) != (0.0, 1.0):
        run_name += "_interval{:g}-{:g}".format(*d.guidance_interval)
    if d.get("candidates", 1) > 1:
        run_name += f"_best{d.candidates}"
    out_dir = common.workdir() / "unclip_eval" / run_name
    out_dir.mkdir(parents=True, exist_ok=True)
    return unclip.generate, jax.random.key(config.seed), out_dir, unclip.clip.embedders()


def _karlo(config):
    import jax.numpy as jnp

    from dalle_jax.pipelines.karlo import Karlo

    snapshot = pathlib.Path(FLAGS.weights)
    if not (snapshot / "model_index.json").is_file():
        raise app.UsageError(f"--weights {snapshot}: no model_index.json there; it is the directory of a Karlo "
                             f"snapshot in the diffusers layout (docs/weights.md)")
    return Karlo.load(snapshot, jnp.dtype(config.karlo.dtype), config.karlo.image_encoder or None)


def _karlo_sampling(config) -> dict:
    from dalle_jax.pipelines.karlo import STAGES, StageSampling

    return {stage: StageSampling(**{**config.karlo[stage].to_dict(), "guidance_interval": tuple(
        config.karlo[stage].guidance_interval)}) for stage in STAGES}


def _karlo_generate(config) -> None:
    import jax
    import numpy as np

    karlo, rng = _karlo(config), jax.random.key(config.seed)
    prompts = [p for p in FLAGS.prompt for _ in range(FLAGS.num_samples)]
    batch = config.karlo.batch_size
    images = np.concatenate([
        karlo.generate(prompts[i: i + batch], jax.random.fold_in(rng, i // batch), _karlo_sampling(config),
                       config.karlo.candidates) for i in range(0, len(prompts), batch)])
    common.save_rows([images], prompts, "karlo_samples.png", FLAGS.num_samples, out_dir=pathlib.Path("."))


def generate(config) -> None:
    import jax

    from dalle_jax.eval import generation

    if not FLAGS.prompt:
        raise app.UsageError("unclip-generate needs at least one --prompt")
    if FLAGS.weights:
        return _karlo_generate(config)
    unclip, rng = _unclip(config), jax.random.key(config.seed)
    generate_batch = lambda prompts, batch: unclip.generate(prompts, jax.random.fold_in(rng, batch))
    images = generation.generate_candidates(generate_batch, FLAGS.prompt, candidates=FLAGS.num_samples,
                                            batch_size=config.sample.batch_size)
    labels = [p for p in FLAGS.prompt for _ in range(FLAGS.num_samples)]
    common.save_rows([images.reshape(-1, *images.shape[2:])], labels, "unclip_samples.png", max(FLAGS.num_samples, 4))


def _karlo_variations(config) -> None:
    import jax

    common.input_images(1, "variations", config)  # a bad file is refused before the model loads
    karlo = _karlo(config)
    image = common.read_image(FLAGS.image[0], config, karlo.image_encoder_size)
    out = karlo.variations(image, FLAGS.num_samples, jax.random.key(config.seed), _karlo_sampling(config))
    original = common.read_image(FLAGS.image[0], config, out.shape[1])
    common.save_rows([original[None], out], ["original"] + [f"variation {i + 1}" for i in range(len(out))],
               "karlo_variations.png", FLAGS.num_samples + 1, out_dir=pathlib.Path("."))


def variations(config) -> None:
    import jax

    if FLAGS.weights:
        return _karlo_variations(config)
    (image,) = common.input_images(1, "variations", config)
    unclip = _unclip(config)
    out = unclip.variations(image, FLAGS.num_samples, jax.random.key(config.seed))
    common.save_rows([image[None], out], ["original"] + [f"variation {i + 1}" for i in range(len(out))],
               "variations.png", FLAGS.num_samples + 1)


def interpolate(config) -> None:
    import jax

    a, b = common.input_images(2, "interpolate", config)
    unclip = _unclip(config)
    out = unclip.interpolate(a, b, FLAGS.num_samples, jax.random.key(config.seed))
    fractions = [i / max(FLAGS.num_samples - 1, 1) for i in range(FLAGS.num_samples)]
    common.save_rows([a[None], out, b[None]], ["first"] + [f"slerp {f:.2f}" for f in fractions] + ["second"],
               "interpolation.png", FLAGS.num_samples + 2)


def text_diff(config) -> None:
    import jax

    if len(FLAGS.prompt) != 2:
        raise app.UsageError("text-diff needs two --prompt: the description now, then the target description")
    (image,) = common.input_images(1, "text-diff", config)
    unclip = _unclip(config)
    out = unclip.text_diff(image, *FLAGS.prompt, FLAGS.num_samples, jax.random.key(config.seed))
    fractions = [0.5 * i / max(FLAGS.num_samples - 1, 1) for i in range(FLAGS.num_samples)]
    common.save_rows([image[None], out], ["original"] + [f"θ = {f:.2f}" for f in fractions], "text_diff.png",
               FLAGS.num_samples + 1)

