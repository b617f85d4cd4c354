"""DALL·E 1's commands: the tokenizers, imported weights, the transformer, CLIP, generate and eval."""

from __future__ import annotations

import json

from absl import app

from dalle_jax.cli import common
from dalle_jax.cli.common import FLAGS


def train_text_tokenizer(config) -> None:
    from dalle_jax.data import pipeline
    from dalle_jax.text import tokenizer

    source = pipeline.load_sources(config.data, decode_images=False)["train"]  # captions alone
    workdir = common.workdir()
    workdir.mkdir(parents=True, exist_ok=True)

    tok = tokenizer.train_from_source(source, config.text.vocab_size)
    path = tok.save(workdir)
    sample = source[0]["caption"]
    ids = tok.encode(sample, config.text.max_length)
    print(f"{path}: {tok.vocab_size} pieces; {sample!r} -> {ids[ids != tokenizer.PAD_ID].tolist()}")


def train_image_tokenizer(config) -> None:
    from dalle_jax.config import stage_config
    from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask

    if config.image_tokenizer.kind == "openai_dvae":
        raise app.UsageError("the OpenAI dVAE is imported, not trained: run import-weights --kind openai-dvae "
                             "--source DIR (docs/weights.md)")
    config = stage_config(config, "image_tokenizer")
    common.train_task(config, ImageTokenizerTask.from_config(config))


def import_weights(config) -> None:
    from dalle_jax.weights import hf_clip, openai_dvae

    if not (FLAGS.kind and FLAGS.source):
        raise app.UsageError("import-weights needs --kind (openai-dvae or hf-clip) and --source DIR")
    importer, run_dir = {"openai-dvae": (openai_dvae.import_weights, "image_tokenizer"),
                         "hf-clip": (hf_clip.import_weights, "clip")}[FLAGS.kind]
    settings = importer(FLAGS.source, common.workdir(), config)
    print(f"{common.workdir() / run_dir}: {FLAGS.kind} imported: {json.dumps(settings)}")


def train(config) -> None:
    from dalle_jax.tasks import make_task

    common.train_task(config, make_task(config, common.workdir()))


def train_clip(config) -> None:
    from dalle_jax.tasks.clip import ClipTask

    common.train_task(config, ClipTask.from_config(config, common.workdir()))


def eval_clip(config) -> None:
    from dalle_jax.tasks.clip import ClipTask

    task = ClipTask.from_config(config, common.workdir())
    report = task.evaluate(common.trained_params(config, task), {})
    (common.workdir() / "clip_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def _trained_dalle(config):
    import jax

    from dalle_jax.tasks.dalle import DalleTask

    if FLAGS.rerank:  # CLIP chooses among plain samples, in place of the model's own likelihood
        config = config.copy_and_resolve_references()
        config.sample.candidates = 1
    task = DalleTask.from_config(config, common.workdir())
    return task, common.trained_params(config, task), jax.random.key(config.seed)


def generate(config) -> None:
    import jax

    from dalle_jax import viz
    from dalle_jax.eval import generation, rerank

    if not FLAGS.prompt:
        raise app.UsageError("generate needs at least one --prompt")
    if FLAGS["keep"].present and not FLAGS.rerank:
        raise app.UsageError("--keep chooses among --rerank N candidates: pass --rerank too (or leave --keep out)")
    if FLAGS.rerank and FLAGS.keep > FLAGS.rerank:
        raise app.UsageError(f"--keep {FLAGS.keep} is more than the --rerank {FLAGS.rerank} candidates drawn per prompt")
    task, params, rng = _trained_dalle(config)
    generate_fn = lambda prompts, batch: task.generate(params, prompts, jax.random.fold_in(rng, batch))
    per_prompt = FLAGS.rerank or FLAGS.num_samples
    images = generation.generate_candidates(generate_fn, FLAGS.prompt, candidates=per_prompt,
                                            batch_size=config.sample.batch_size)
    labels = [[p] * per_prompt for p in FLAGS.prompt]
    if FLAGS.rerank:
        images, similarity = rerank.rerank(images, FLAGS.prompt, *common.clip_for_rerank(), keep=FLAGS.keep)
        labels = [[f"{p} (CLIP {100 * s:.1f})" for s in row] for p, row in zip(FLAGS.prompt, similarity)]
    columns = images.shape[1] if len(FLAGS.prompt) > 1 else 8
    out = FLAGS.out or str(common.workdir() / "samples.png")
    print(viz.save_grid(out, images.reshape(-1, *images.shape[2:]), sum(labels, []), columns=max(columns, 4),
                        scale=viz.tile_scale(images.shape[-2]), label_lines=4))


def evaluate(config) -> None:
    from dalle_jax.data import pipeline
    from dalle_jax.eval import generation

    if config.task == "unclip":
        from dalle_jax.cli import unclip

        generate_batch, rng, out_dir, embedders = unclip.evaluation(config)
    else:
        task, params, rng = _trained_dalle(config)
        generate_batch = lambda prompts, key: task.generate(params, prompts, key)
        out_dir = common.workdir()
        embedders = common.clip_for_rerank() if FLAGS.rerank else common.trained_clip()
    if pipeline.is_own_data(config.data):
        if FLAGS.rerank:
            raise app.UsageError("eval --rerank needs the shapes oracle; on your own data use generate --rerank N")
        print(f"no oracle for {pipeline.source_name(config.data)}: reporting "
              f"{'CLIP score and ' if embedders else ''}a grid of samples beside the true validation images")
        generation.evaluate_on_captions(
            generate_batch, pipeline.load_sources(config.data)["validation"], num_prompts=config.eval.num_prompts,
            rng=rng, batch_size=config.sample.batch_size, clip_embedders=embedders, out_dir=out_dir)
        print((out_dir / "eval.md").read_text())
    else:
        report = generation.evaluate_text_to_image(
            generate_batch, pipeline.load_sources(config.data), num_prompts=config.eval.num_prompts,
            image_size=config.data.image_size, rng=rng, batch_size=config.sample.batch_size, clip_embedders=embedders,
            rerank_candidates=FLAGS.rerank, out_dir=out_dir)
        print(generation.markdown_table(report))
    print(f"wrote {out_dir / 'eval.json'}")

