"""dalle-jax command line.

Usage: python run.py COMMAND --config CONFIG[:VARIANT] [--workdir DIR] [--config.KEY=VALUE ...]

Commands:
  build-data            render the shapes data set (tfds, array_record) for the config; with
                        --config.data.source=folder:DIR|webdataset:GLOB|parquet:GLOB, build the data set
                        --config.data.name from your own images and captions (skipped files listed in
                        DATA_DIR/image_text/NAME/1.0.0/build_report.json)
  show-data             write a PNG grid of examples with both captions (--split, --num, --out)
  check-oracle          score clean renders of every split with the oracle; JSON to stdout
  train-text-tokenizer  train the BPE text tokenizer on the training captions into --workdir
  train-image-tokenizer train the image tokenizer (VQ-VAE or dVAE) into --workdir/image_tokenizer
  import-weights        released weights into --workdir: --kind openai-dvae (--source: the directory of OpenAI's
                        encoder.pkl and decoder.pkl; needs the [convert] extra) to --workdir/image_tokenizer, or
                        --kind hf-clip (--source: a transformers CLIP snapshot) to --workdir/clip; later
                        commands use them as if trained there (docs/weights.md)
  train                 train the config's task into --workdir/TASK (--resume to continue)
  train-clip            train CLIP into --workdir/clip (needs the text tokenizer in --workdir)
  eval-clip             CLIP: zero-shot colour/shape accuracy and recall@1/5; --workdir/clip_eval.json
  generate              DALL·E: images for --prompt (repeatable), --num-samples each, PNG grid to --out;
                        each image is the best of sample.candidates by the model's own likelihood;
                        --rerank N --keep K draws N plain samples and keeps the K that CLIP likes best
  eval                  DALL·E: oracle accuracy on validation and held-out prompts: --workdir/eval.json,
                        eval.md, and the images with their prompts (eval_SPLIT.npz, eval_SPLIT.png);
                        CLIP score when --workdir/clip exists; --rerank N adds reranked (keep 1) figures
  train-captioner       DALL·E 3: train the captioner in --mode alt (pretraining), short or descriptive
                        (fine-tuned from alt) into --workdir/captioner_MODE (needs --workdir/clip)
  caption               DALL·E 3: print captions of --image files (repeatable) in --mode
  recaption             DALL·E 3: caption every split with the --mode captioner (resumable), write the
                        recaptioned tfds data set to --workdir/data and caption quality JSON
  dalle3-experiment     DALL·E 3: every stage, then alt-text vs short vs descriptive captions for the same
                        text-to-image model: --workdir/experiment.json and experiment.md
  train-prior           DALL·E 2: train the config's prior (prior.kind: diffusion or autoregressive) into
                        --workdir/prior_KIND (needs --workdir/clip)
  train-decoder         DALL·E 2: train the CLIP-conditioned diffusion decoder into --workdir/decoder
  train-upsampler       DALL·E 2: train upsampler --stage N (default 1) of the config's cascade (upsamplers)
                        into --workdir/SECTION (upsampler for the one stage of shapes_unclip.py)
  unclip-generate       DALL·E 2: prior → decoder → upsamplers for each --prompt; PNG grid to --out
                        (--weights DIR: Karlo's released unCLIP from its diffusers snapshot, 256 px)
  variations            DALL·E 2: --num-samples decodings of an --image's CLIP embedding; PNG grid to --out
                        (--weights DIR: Karlo's image-variation snapshot)
  interpolate           DALL·E 2: slerp between two --image embeddings in --num-samples steps; PNG to --out
  text-diff             DALL·E 2: turn an --image's embedding from the first --prompt towards the second;
                        PNG to --out
  serve                 a web page to try the work dir's models (DALL·E 1, unCLIP, captioner tabs) at --host:--port
                        (default 127.0.0.1:7860); needs the [demo] extra (Gradio)
  (eval on a config with task "unclip" scores unCLIP into --workdir/unclip_eval/PRIOR_SAMPLER_STEPS_GUIDANCE/;
   CLIP keeps the best of decoder.sample.candidates (default 4) draws per prompt, ..._bestN/; 1 draws plainly)

Examples:
  python run.py build-data --config configs/shapes_toy.py
  python run.py show-data --config configs/shapes_toy.py --out shapes.png --num 16
  python run.py train-text-tokenizer --config configs/shapes_toy.py --workdir workdir/toy
  python run.py train --config configs/shapes_toy.py --workdir workdir/toy --config.train.steps=500
  python run.py generate --config configs/shapes_dalle.py --workdir workdir/dalle \
      --prompt "a small red circle above a large blue square" --num-samples 16 --out grid.png
  python run.py variations --config configs/shapes_unclip.py --workdir workdir/unclip --image shape.png
  python run.py unclip-generate --weights karlo-v1-alpha --prompt "a red boat on a lake" --num-samples 4
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import sys

from absl import app, flags
from absl import logging as absl_logging

flags.DEFINE_string("config", None, "config file, optionally with a :variant")
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and the tokenizer go")
flags.DEFINE_bool("resume", False, "continue from the latest checkpoint in --workdir")
flags.DEFINE_string("split", "train", "data split for show-data")
flags.DEFINE_integer("num", 16, "number of examples (show-data) or renders per split (check-oracle)", lower_bound=1)
flags.DEFINE_string("out", None, "output PNG path")
flags.DEFINE_multi_string("prompt", [], "prompt for generate (repeat the flag for several)")
flags.DEFINE_integer("num_samples", 4, "images per prompt for generate", lower_bound=1)
flags.DEFINE_integer("rerank", 0, "generate/eval: draw this many plain samples per prompt and rerank them "
                     "with the CLIP in --workdir/clip, in place of sample.candidates (0: no CLIP reranking)",
                     lower_bound=0)
flags.DEFINE_integer("stage", 1, "train-upsampler: which upsampler of the config's cascade (from 1, lowest "
                     "resolution first)", lower_bound=1)
flags.DEFINE_integer("keep", 1, "generate: candidates kept per prompt after reranking", lower_bound=1)
flags.DEFINE_multi_string("image", [], "caption: an image file (PNG/JPEG; repeat the flag for several)")
flags.DEFINE_enum("mode", None, ["alt", "short", "descriptive"], "train-captioner/caption/recaption: captioner mode")
flags.DEFINE_enum("kind", None, ["openai-dvae", "hf-clip"], "import-weights: what --source holds")
flags.DEFINE_string("source", None, "import-weights: the directory of the released files")
flags.DEFINE_string("weights", None, "unclip-generate/variations: a Karlo snapshot directory (diffusers layout) "
                    "to sample instead of a work dir's stages; --config defaults to configs/karlo.py")
flags.DEFINE_bool("verbose", False, "on an error, print its Python traceback too (always written to "
                  "WORKDIR/last_error.log, or to the temporary directory without a work dir)")
flags.DEFINE_string("host", "127.0.0.1", "serve: the address to listen on (0.0.0.0: every interface)")
flags.DEFINE_integer("port", 7860, "serve: the port", lower_bound=1, upper_bound=65535)
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first (several processes; "
                  "docs/performance.md): a cluster launcher JAX detects, or the three flags below")
flags.DEFINE_string("coordinator", None, "--distributed: HOST:PORT of process 0 (else detected, or "
                    "$JAX_COORDINATOR_ADDRESS)")
flags.DEFINE_integer("num_processes", None, "--distributed: how many processes take part", lower_bound=1)
flags.DEFINE_integer("process_id", None, "--distributed: this process's index, 0 .. num_processes - 1", lower_bound=0)
flags.DEFINE_integer("heartbeat_timeout", 100, "--distributed: seconds without a heartbeat after which a process "
                     "counts as dead and every other one stops with an error", lower_bound=1)
FLAGS = flags.FLAGS


def _workdir() -> pathlib.Path:
    if not FLAGS.workdir:
        raise app.UsageError("this command needs --workdir")
    workdir = pathlib.Path(FLAGS.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise app.UsageError(f"--workdir {workdir} is a file, not a directory")
    return workdir


# The commands that read what earlier ones trained into the work dir (the rest create it).
READ_A_WORKDIR = ("eval-clip", "generate", "eval", "caption", "recaption", "unclip-generate", "variations",
                  "interpolate", "text-diff", "serve")


def build_data(config) -> None:
    from dalle_jax.data import ingest, pipeline

    if pipeline.is_own_data(config.data):
        report = ingest.build(config.data)
        print(f"{ingest.dataset_dir(config.data)}: {ingest.summary(report)}, "
              f"{report['images_per_second']} images/s; reasons and files in {ingest.REPORT} there")
        return
    for split, source in pipeline.load_sources(config.data).items():
        print(f"{split}: {len(source)} examples")


def show_data(config) -> None:
    from dalle_jax import viz
    from dalle_jax.data import pipeline

    sources = pipeline.load_sources(config.data)
    if FLAGS.split not in sources:
        raise app.UsageError(f"--split {FLAGS.split} is not a split of this data set; it has {', '.join(sources)}")
    source = sources[FLAGS.split]
    examples = [source[i] for i in range(min(FLAGS.num, len(source)))]
    labels = [e["caption"] + (f" | alt: {e['alt_text']}" if "alt_text" in e else "") for e in examples]
    out = FLAGS.out or f"{config.data.name.replace('/', '_')}_{FLAGS.split}.png"
    print(viz.save_grid(out, [e["image"] for e in examples], labels, columns=4,
                        scale=viz.tile_scale(config.data.image_size), label_lines=5))


def check_oracle(config) -> None:
    import tqdm

    from dalle_jax.data import shapes
    from dalle_jax.eval import oracle

    report = {}
    for split in shapes.SPLITS:
        scores, counts = [], []
        for index in tqdm.trange(FLAGS.num, desc=f"oracle {split}"):
            example = shapes.make_example(config.data.seed, split, index, config.data.image_size,
                                          tuple(config.data.num_objects_probs))
            scene = shapes.Scene.from_features(example, config.data.image_size)
            scores.append(oracle.score(example["image"], scene))
            counts.append(len(scene.objects))
        report[split] = oracle.summarize(scores, counts)
    print(json.dumps(report, indent=2))


def train_text_tokenizer(config) -> None:
    from dalle_jax.data import pipeline
    from dalle_jax.text import tokenizer

    source = pipeline.load_sources(config.data, decode_images=False)["train"]  # captions alone
    workdir = _workdir()
    workdir.mkdir(parents=True, exist_ok=True)

    tok = tokenizer.train_from_source(source, config.text.vocab_size)
    path = tok.save(workdir)
    sample = source[0]["caption"]
    ids = tok.encode(sample, config.text.max_length)
    print(f"{path}: {tok.vocab_size} pieces; {sample!r} -> {ids[ids != tokenizer.PAD_ID].tolist()}")


def _train_task(config, task) -> None:
    from dalle_jax.train import trainer

    try:
        trainer.train(config, _workdir() / task.name, task, resume=FLAGS.resume)
    except trainer.TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(143)


def train_image_tokenizer(config) -> None:
    from dalle_jax.config import stage_config
    from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask

    if config.image_tokenizer.kind == "openai_dvae":
        raise app.UsageError("the OpenAI dVAE is imported, not trained: run import-weights --kind openai-dvae "
                             "--source DIR (docs/weights.md)")
    config = stage_config(config, "image_tokenizer")
    _train_task(config, ImageTokenizerTask.from_config(config))


def import_weights(config) -> None:
    from dalle_jax.weights import hf_clip, openai_dvae

    if not (FLAGS.kind and FLAGS.source):
        raise app.UsageError("import-weights needs --kind (openai-dvae or hf-clip) and --source DIR")
    importer, run_dir = {"openai-dvae": (openai_dvae.import_weights, "image_tokenizer"),
                         "hf-clip": (hf_clip.import_weights, "clip")}[FLAGS.kind]
    settings = importer(FLAGS.source, _workdir(), config)
    print(f"{_workdir() / run_dir}: {FLAGS.kind} imported: {json.dumps(settings)}")


def train(config) -> None:
    from dalle_jax.tasks import make_task

    _train_task(config, make_task(config, _workdir()))


def train_clip(config) -> None:
    from dalle_jax.tasks.clip import ClipTask

    _train_task(config, ClipTask.from_config(config, _workdir()))


def _trained_params(config, task):
    """The parameters of `task`'s latest checkpoint in --workdir/TASK."""
    from dalle_jax.train import trainer

    return trainer.load_variables(config, _workdir() / task.name, task)["params"]


def eval_clip(config) -> None:
    from dalle_jax.tasks.clip import ClipTask

    task = ClipTask.from_config(config, _workdir())
    report = task.evaluate(_trained_params(config, task), {})
    (_workdir() / "clip_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def _trained_dalle(config):
    import jax

    from dalle_jax.tasks.dalle import DalleTask

    if FLAGS.rerank:  # CLIP chooses among plain samples, in place of the model's own likelihood
        config = config.copy_and_resolve_references()
        config.sample.candidates = 1
    task = DalleTask.from_config(config, _workdir())
    return task, _trained_params(config, task), jax.random.key(config.seed)


def _trained_clip():
    """(embed_images, embed_text) of the CLIP trained in --workdir/clip, or None if there is none."""
    from dalle_jax.tasks.clip import TrainedClip

    if not (_workdir() / "clip" / "config.json").exists():
        return None
    return TrainedClip.load(_workdir()).embedders()


def _clip_for_rerank():
    embedders = _trained_clip()
    if embedders is None:
        raise app.UsageError(f"--rerank needs a CLIP in {_workdir() / 'clip'}: run train-clip first")
    return embedders


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
        images, similarity = rerank.rerank(images, FLAGS.prompt, *_clip_for_rerank(), keep=FLAGS.keep)
        labels = [[f"{p} (CLIP {100 * s:.1f})" for s in row] for p, row in zip(FLAGS.prompt, similarity)]
    columns = images.shape[1] if len(FLAGS.prompt) > 1 else 8
    out = FLAGS.out or str(_workdir() / "samples.png")
    print(viz.save_grid(out, images.reshape(-1, *images.shape[2:]), sum(labels, []), columns=max(columns, 4),
                        scale=viz.tile_scale(images.shape[-2]), label_lines=4))


def evaluate(config) -> None:
    import jax

    from dalle_jax.data import pipeline
    from dalle_jax.eval import generation

    if config.task == "unclip":
        unclip = _unclip(config)
        generate_batch = lambda prompts, key: unclip.generate(prompts, key)
        rng = jax.random.key(config.seed)
        d = config.decoder.sample
        run_name = f"{config.prior.kind}_{d.sampler}{d.num_steps}_guidance{d.guidance_scale:g}"
        if d.eta and d.sampler != "ddpm":  # DDPM has no η
            run_name += f"_eta{d.eta:g}"
        if tuple(d.guidance_interval) != (0.0, 1.0):
            run_name += "_interval{:g}-{:g}".format(*d.guidance_interval)
        if d.get("candidates", 1) > 1:
            run_name += f"_best{d.candidates}"
        out_dir = _workdir() / "unclip_eval" / run_name
        out_dir.mkdir(parents=True, exist_ok=True)
        embedders = unclip.clip.embedders()
    else:
        task, params, rng = _trained_dalle(config)
        generate_batch = lambda prompts, key: task.generate(params, prompts, key)
        out_dir = _workdir()
        embedders = _clip_for_rerank() if FLAGS.rerank else _trained_clip()
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


def train_captioner(config) -> None:
    from dalle_jax.experiments import dalle3
    from dalle_jax.tasks.captioner import CaptionerTask

    config = dalle3.captioner_config(config, FLAGS.mode or config.captioner.mode)
    _train_task(config, CaptionerTask.from_config(config, _workdir()))


def _read_image(path: str, config, size: int | None = None):
    """An --image file as the models see it (`images.read_input_image`, at `size` or the data's
    size), or a one-line refusal naming it."""
    from dalle_jax.data import images

    try:
        return images.read_input_image(path, size or config.data.image_size, max_pixels=config.data.max_pixels)
    except (OSError, images.Rejected) as error:
        raise app.UsageError(f"cannot read image {path}: {error}")


def caption(config) -> None:
    import jax
    import numpy as np

    from dalle_jax.experiments import dalle3

    if not FLAGS.image:
        raise app.UsageError("caption needs at least one --image")
    images = np.stack([_read_image(path, config) for path in FLAGS.image])  # a bad file is refused first
    task, params = dalle3.trained_captioner(config, _workdir(), FLAGS.mode or config.captioner.mode)
    for path, text in zip(FLAGS.image, task.caption(params, images, jax.random.key(config.seed))):
        print(f"{path}\t{text}")


def recaption_command(config) -> None:
    from dalle_jax.experiments import dalle3

    mode = FLAGS.mode or "descriptive"
    result = dalle3.recaption_data(config, _workdir(), mode)
    print(json.dumps({k: result[k] for k in ("mode", "throughput", "quality")}, indent=2))
    print(f"wrote {_workdir() / 'data'} ({dalle3.recaptioned_name(config.data, mode)}) and "
          f"{_workdir() / 'recaption' / mode / 'quality.json'}")


def dalle3_experiment(config) -> None:
    from dalle_jax.experiments import dalle3

    report = dalle3.run(config, _workdir())
    print(dalle3.markdown_report(report))
    print(f"wrote {_workdir() / 'experiment.json'} and experiment.md")


def _train_stage(config, stage: str, task_class) -> None:
    from dalle_jax.config import stage_config

    config = stage_config(config, stage)
    _train_task(config, task_class.from_config(config, _workdir()))


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
    _train_task(staged, dataclasses.replace(task, config=staged))


def _unclip(config):
    from dalle_jax.pipelines.unclip import Unclip

    try:
        return Unclip.load(config, _workdir())
    except FileNotFoundError as error:
        raise app.UsageError(str(error))


def _save_rows(rows, labels, default_name: str, columns: int, out_dir: pathlib.Path | None = None) -> None:
    """A PNG grid of `rows` at --out, or `default_name` in `out_dir` (the work dir if None)."""
    import numpy as np

    from dalle_jax import viz

    out = FLAGS.out or str((out_dir or _workdir()) / default_name)
    rows = np.concatenate(rows)
    print(viz.save_grid(out, rows, labels, columns=columns, scale=viz.tile_scale(rows.shape[-2]), label_lines=4))


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
    _save_rows([images], prompts, "karlo_samples.png", FLAGS.num_samples, out_dir=pathlib.Path("."))


def unclip_generate(config) -> None:
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
    _save_rows([images.reshape(-1, *images.shape[2:])], labels, "unclip_samples.png", max(FLAGS.num_samples, 4))


def _images(count: int, command: str, config):
    """The --image files, exactly `count` of them, read (and a bad one refused) before any model loads."""
    if len(FLAGS.image) != count:
        raise app.UsageError(f"{command} needs exactly {count} --image file(s), got {len(FLAGS.image)}")
    return [_read_image(path, config) for path in FLAGS.image]


def _karlo_variations(config) -> None:
    import jax

    _images(1, "variations", config)  # a bad file is refused before the model loads
    karlo = _karlo(config)
    image = _read_image(FLAGS.image[0], config, karlo.image_encoder_size)
    out = karlo.variations(image, FLAGS.num_samples, jax.random.key(config.seed), _karlo_sampling(config))
    original = _read_image(FLAGS.image[0], config, out.shape[1])
    _save_rows([original[None], out], ["original"] + [f"variation {i + 1}" for i in range(len(out))],
               "karlo_variations.png", FLAGS.num_samples + 1, out_dir=pathlib.Path("."))


def variations(config) -> None:
    import jax

    if FLAGS.weights:
        return _karlo_variations(config)
    (image,) = _images(1, "variations", config)
    unclip = _unclip(config)
    out = unclip.variations(image, FLAGS.num_samples, jax.random.key(config.seed))
    _save_rows([image[None], out], ["original"] + [f"variation {i + 1}" for i in range(len(out))],
               "variations.png", FLAGS.num_samples + 1)


def interpolate(config) -> None:
    import jax

    a, b = _images(2, "interpolate", config)
    unclip = _unclip(config)
    out = unclip.interpolate(a, b, FLAGS.num_samples, jax.random.key(config.seed))
    fractions = [i / max(FLAGS.num_samples - 1, 1) for i in range(FLAGS.num_samples)]
    _save_rows([a[None], out, b[None]], ["first"] + [f"slerp {f:.2f}" for f in fractions] + ["second"],
               "interpolation.png", FLAGS.num_samples + 2)


def text_diff(config) -> None:
    import jax

    if len(FLAGS.prompt) != 2:
        raise app.UsageError("text-diff needs two --prompt: the description now, then the target description")
    (image,) = _images(1, "text-diff", config)
    unclip = _unclip(config)
    out = unclip.text_diff(image, *FLAGS.prompt, FLAGS.num_samples, jax.random.key(config.seed))
    fractions = [0.5 * i / max(FLAGS.num_samples - 1, 1) for i in range(FLAGS.num_samples)]
    _save_rows([image[None], out], ["original"] + [f"θ = {f:.2f}" for f in fractions], "text_diff.png",
               FLAGS.num_samples + 1)


def serve(config) -> None:
    import importlib.util

    del config  # each model is served with the config it trained with
    if importlib.util.find_spec("gradio") is None:
        raise app.UsageError("serve needs Gradio: pip install -e '.[demo]'")
    from dalle_jax.serve import build_page

    page = build_page(_workdir())
    print(f"serving {_workdir()} at http://{FLAGS.host}:{FLAGS.port} (Ctrl-C stops)")
    page.queue().launch(server_name=FLAGS.host, server_port=FLAGS.port, show_error=True)


COMMANDS = {
    "build-data": build_data,
    "show-data": show_data,
    "check-oracle": check_oracle,
    "train-text-tokenizer": train_text_tokenizer,
    "train-image-tokenizer": train_image_tokenizer,
    "import-weights": import_weights,
    "train": train,
    "train-clip": train_clip,
    "eval-clip": eval_clip,
    "generate": generate,
    "eval": evaluate,
    "train-captioner": train_captioner,
    "caption": caption,
    "recaption": recaption_command,
    "dalle3-experiment": dalle3_experiment,
    "train-prior": train_prior,
    "train-decoder": train_decoder,
    "train-upsampler": train_upsampler,
    "unclip-generate": unclip_generate,
    "variations": variations,
    "interpolate": interpolate,
    "text-diff": text_diff,
    "serve": serve,
}


# The flags each command reads, besides --config, --workdir, --verbose and --distributed: any other
# given is refused (a flag a command ignores is a mistake the user should hear about).
COMMAND_FLAGS = {
    "build-data": (), "show-data": ("split", "num", "out"), "check-oracle": ("num",), "train-text-tokenizer": (),
    "train-image-tokenizer": ("resume",), "import-weights": ("kind", "source"), "train": ("resume",),
    "train-clip": ("resume",), "eval-clip": (), "generate": ("prompt", "num_samples", "rerank", "keep", "out"),
    "eval": ("rerank",), "train-captioner": ("mode", "resume"), "caption": ("image", "mode"), "recaption": ("mode",),
    "dalle3-experiment": (), "train-prior": ("resume",), "train-decoder": ("resume",), "train-upsampler": ("stage", "resume"),
    "unclip-generate": ("prompt", "num_samples", "out", "weights"),
    "variations": ("image", "num_samples", "out", "weights"),
    "interpolate": ("image", "num_samples", "out"), "text-diff": ("image", "prompt", "num_samples", "out"),
    "serve": ("host", "port"),
}

# The config section a command reads beyond the shared ones, and a shipped config that has it.
COMMAND_SECTIONS = {
    "train-image-tokenizer": ("image_tokenizer", "shapes_dalle.py"), "generate": ("image_tokenizer", "shapes_dalle.py"),
    "eval": ("eval", "shapes_dalle.py"), "train-captioner": ("captioner", "shapes_dalle3.py"),
    "caption": ("captioner", "shapes_dalle3.py"), "recaption": ("captioner", "shapes_dalle3.py"),
    "dalle3-experiment": ("experiment", "shapes_dalle3.py"), "train-prior": ("prior", "shapes_unclip.py"),
    "train-decoder": ("decoder", "shapes_unclip.py"), "train-upsampler": ("upsampler", "shapes_unclip.py"),
    **dict.fromkeys(("unclip-generate", "variations", "interpolate", "text-diff"), ("upsampler", "shapes_unclip.py")),
}


def check_flags(command: str) -> None:
    """Refuses a flag `command` does not read, and an --out Pillow cannot write."""
    command_flags = sorted(set().union(*COMMAND_FLAGS.values()))
    unused = [name for name in command_flags if FLAGS[name].present and name not in COMMAND_FLAGS[command]]
    if unused:
        read = ", ".join(f"--{name.replace('_', '-')}" for name in COMMAND_FLAGS[command]) or "none"
        raise app.UsageError(f"{command} does not read {', '.join('--' + n.replace('_', '-') for n in unused)} "
                             f"(the flags it reads: {read})")
    if FLAGS.out:
        from PIL import Image

        suffix = pathlib.Path(FLAGS.out).suffix.lower()
        if Image.registered_extensions().get(suffix) not in Image.SAVE:
            raise app.UsageError(f"--out {FLAGS.out}: name a PNG (or another image file: .jpg, .webp)")


def parse_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """absl flags for the known flags; `--config.KEY=VALUE` overrides are kept for `load_config`."""
    if any(a in ("-h", "--help") for a in argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    try:
        positional = FLAGS([_underscored(a) for a in argv if not a.startswith("--config.")])
    except flags.Error as error:
        sys.exit(f"error: {error} (python run.py --help lists the flags)")
    return positional, overrides


def _underscored(arg: str) -> str:
    """`--num-samples=4` -> `--num_samples=4`: flags may be spelt with hyphens."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + sep + value


def main(parsed: tuple[list[str], list[str]]) -> None:
    positional, overrides = parsed
    if len(positional) != 2 or positional[1] not in COMMANDS:
        given = positional[1] if len(positional) > 1 else "nothing"
        raise app.UsageError(f"expected one command of {', '.join(COMMANDS)}; got {given}")
    if not FLAGS.config and FLAGS.weights:
        FLAGS.config = str(pathlib.Path(__file__).resolve().parent / "configs" / "karlo.py")
    if not FLAGS.config:
        raise app.UsageError("--config is required, e.g. --config configs/shapes_toy.py")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and tfds are chatty at INFO
    logging.getLogger("dalle_jax").setLevel(logging.INFO)
    from dalle_jax.config import ConfigError, load_config

    try:
        check_flags(positional[1])
    except app.UsageError as error:
        sys.exit(f"error: {error} (python run.py --help lists the commands and flags)")
    try:
        config = load_config(FLAGS.config, overrides)
    except ConfigError as error:
        sys.exit(f"config error: {error}")
    section, example = ("karlo", "karlo.py") if FLAGS.weights else COMMAND_SECTIONS.get(positional[1], (None, None))
    if section and section not in config:
        sys.exit(f"config error: {positional[1]} reads the config's {section!r} section, which {FLAGS.config} has "
                 f"not: use a config such as configs/{example}")
    try:
        if FLAGS.distributed:
            _initialize_distributed()
        elif given := [f"--{name}" for name in DISTRIBUTED_FLAGS if FLAGS[name].present]:
            raise app.UsageError(f"{', '.join(given)} only mean something with --distributed")
        if positional[1] in READ_A_WORKDIR and not FLAGS.weights and not _workdir().is_dir():
            raise app.UsageError(f"the work dir {_workdir()} does not exist: train into it first (or check --workdir)")
        COMMANDS[positional[1]](config)
    except app.UsageError as error:
        sys.exit(f"error: {error} (python run.py --help lists the commands and flags)")
    except Exception as error:  # noqa: BLE001  (a user sees one line; the traceback goes to a file)
        sys.exit(_one_line(error))


DISTRIBUTED_FLAGS = ("coordinator", "num_processes", "process_id", "heartbeat_timeout")


def _initialize_distributed() -> None:
    """`jax.distributed.initialize` with the flags given (a launcher JAX detects supplies the rest).
    A process that dies stops the others after `--heartbeat_timeout` seconds, with JAX's message
    that another task died, rather than leaving them waiting in a collective."""
    import jax

    try:
        jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id,
                                   heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)
    except ValueError as error:  # no cluster found: JAX lists what it looked for
        raise app.UsageError(f"--distributed: {error} Start each process under a cluster launcher JAX detects "
                             "(SLURM, Open MPI, a Cloud TPU pod, Kubernetes), or give --coordinator HOST:PORT "
                             "--num_processes N --process_id I")
    logging.getLogger("dalle_jax.run").info("process %d of %d, %d local of %d devices", jax.process_index(),
                                            jax.process_count(), jax.local_device_count(), jax.device_count())


def _one_line(error: Exception) -> str:
    """`error: MESSAGE [traceback: FILE]`: the traceback written to WORKDIR/last_error.log (or the
    temporary directory), and printed as well with --verbose."""
    import tempfile
    import traceback

    workdir = pathlib.Path(FLAGS.workdir) if FLAGS.workdir else None
    log = (workdir if workdir and workdir.is_dir() else pathlib.Path(tempfile.gettempdir())) / "last_error.log"
    text = "".join(traceback.format_exception(error))
    try:
        log.write_text(text)
        where = f" [traceback: {log}]"
    except OSError:  # a full or read-only disk
        where = " [--verbose prints the traceback]"
    if FLAGS.verbose:
        print(text, file=sys.stderr, end="")
    message = str(error).strip()
    if not type(error).__module__.startswith("dalle_jax") and not isinstance(error, (FileNotFoundError,
                                                                                    FileExistsError)):
        message = f"{type(error).__name__}: {message}".rstrip(": ")  # a library's error: its kind helps
    return f"error: {message}{where}"


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
