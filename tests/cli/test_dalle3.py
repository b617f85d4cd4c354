"""DALL·E 3 through `run.py` on the tiny config: the whole experiment, then captioning images."""

import json

import numpy as np
from PIL import Image

from tests.cli.runner import run


def test_dalle3_experiment_end_to_end(tiny_data_dir, tmp_path):
    from dalle_jax.train.metric_writer import read_metrics

    common = ["--config", "configs/shapes_dalle3.py:tiny", f"--config.data.data_dir={tiny_data_dir}",
              "--workdir", str(tmp_path), "--config.train.progress_bar=false"]
    run("dalle3-experiment", *common)
    report = json.loads((tmp_path / "experiment.json").read_text())
    assert set(report["arms"]) == {"alt", "short", "descriptive"}
    for splits in report["arms"].values():
        assert set(splits) == {"validation", "test_compositional"}
        assert splits["validation"]["all"]["n"] == 8 and 0 <= splits["validation"]["all"]["clip_score"] <= 100
    assert set(report["caption_quality"]) == {"alt_text (original)", "short (synthetic)", "descriptive (synthetic)"}
    assert report["caption_quality"]["alt_text (original)"]["all"]["precision"] == 1.0  # alt text is true
    assert (tmp_path / "experiment.md").read_text().startswith("| training captions |")
    assert Image.open(tmp_path / "arms.png").size[1] > 3 * 96  # a row of enlarged samples per arm
    for mode in ("short", "descriptive"):
        assert (tmp_path / "recaption" / mode / "quality.json").exists()
        assert Image.open(tmp_path / "recaption" / mode / "validation_captions.png").size[0] > 4 * 32
        assert (tmp_path / f"captioner_{mode}" / "checkpoints").exists()
        evaluated = [m for m in read_metrics(tmp_path / f"captioner_{mode}") if "eval/relation_recall" in m]
        assert evaluated and 0.0 <= evaluated[-1]["eval/precision"] <= 1.0
    # Every stage is done: recaptioning again captions nothing, and the captioner captions a PNG.
    printed = run("recaption", *common, "--mode", "short").stdout
    assert json.loads(printed[: printed.rindex("}") + 1])["throughput"]["images"] == 0
    from dalle_jax.data import shapes

    image = tmp_path / "shape.png"
    shape = Image.fromarray(shapes.make_example(0, "validation", 0, image_size=32)["image"])
    shape.save(image)
    others = {"palette.gif": shape.quantize(16), "grey.png": shape.convert("L"), "one_pixel.png": shape.resize((1, 1))}
    for name, other in others.items():
        other.save(tmp_path / name)
    no_data = [arg if not arg.startswith("--config.data.data_dir=") else "--config.data.data_dir=/nonexistent"
               for arg in common]  # captioning needs the work dir alone
    images = [image, *(tmp_path / name for name in others)]
    out = run("caption", *no_data, "--mode", "descriptive", *sum((["--image", str(i)] for i in images), [])).stdout
    lines = out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(i) for i in images] and all("\t" in line for line in lines)
    missing = run("caption", *common, "--image", str(tmp_path / "nope.png"), check=False)
    assert missing.returncode != 0 and "cannot read image" in missing.stderr and "nope.png" in missing.stderr

    # log p(text | image): against a naive sum of the log-softmax over the caption's pieces and its EOS.
    from dalle_jax.experiments import dalle3
    from dalle_jax.text.tokenizer import EOS_ID
    from dalle_jax.train import trainer

    config = trainer.run_config(tmp_path / "captioner_descriptive")
    task, params = dalle3.trained_captioner(config, tmp_path, "descriptive")
    images = np.stack([shapes.make_example(0, "validation", i, image_size=32)["image"] for i in range(2)])
    texts = ["a small red circle", "a large blue square"]
    scores = task.log_likelihood(params, images, texts)
    captions = task.text_tokenizer.encode(texts, config.text.max_length)
    features = task.image_features(params["image_encoder"], images)
    logits = np.asarray(task.model.apply({"params": params["captioner"]}, features, captions), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for i, caption in enumerate(captions):
        end = list(caption).index(EOS_ID)
        np.testing.assert_allclose(scores[i], sum(log_probs[i, j, caption[j]] for j in range(end + 1)), rtol=1e-4)
    assert np.all(scores < 0)
