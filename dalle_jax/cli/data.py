"""The data commands: build-data, show-data, check-oracle."""

from __future__ import annotations

import json

from absl import app

from dalle_jax.cli.common import FLAGS


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

