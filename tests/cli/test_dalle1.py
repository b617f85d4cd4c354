"""DALL·E 1 through `run.py` on the tiny config: training, sampling, eval, CLIP reranking, the web page's calls."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.cli.runner import dalle_args, run
from tests.pictures import read_pictures


@pytest.mark.xdist_group("trained_dalle")
def test_dalle_pipeline_end_to_end(trained_dalle, tiny_data_dir, tmp_path):
    shutil.copytree(trained_dalle, tmp_path, dirs_exist_ok=True)
    common = dalle_args(tiny_data_dir, tmp_path)
    with pytest.raises(AssertionError, match="already holds checkpoints"):
        run("train-image-tokenizer", *common)
    # TensorBoard holds each stage's pictures of its last step: reconstructions, then samples for 8 prompts.
    for stage, tag in (("image_tokenizer", "pictures/reconstructions"), ("dalle", "pictures/samples")):
        ((step, picture),) = read_pictures(tmp_path / stage)[tag]
        assert step == 4 and picture.shape[1] > 8 * 96 and picture.std() > 10, (stage, picture.shape)
    out = tmp_path / "grid.png"
    # Any text is a prompt (a command line holds no NUL): empty, emoji, right-to-left, controls, 100,000 characters.
    odd = ["", "🙂 a red circle מעגל אדום \u202e\x1b[31m\x07 漢字", "a large blue square " * 5_000]
    result = run("generate", *common, "--prompt", "a small red circle", *sum((["--prompt", p] for p in odd), []),
                 "--num-samples", "2", "--out", str(out))
    assert Image.open(out).size[0] > 4 * 32
    assert "text truncated from" in result.stderr and "(100,000 characters)" in result.stderr
    run("eval", *common)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report) == {"validation", "test_compositional"}
    for summary in report.values():
        assert summary["all"]["n"] == 8
        assert all(0.0 <= summary["all"][k] <= 1.0 for k in ("colour", "shape", "size", "count", "all_correct"))
    assert (tmp_path / "eval.md").read_text().startswith("| split | objects |")
    # The reported accuracy is the oracle's score of the saved images.
    from dalle_jax.data import shapes
    from dalle_jax.eval import oracle

    saved = np.load(tmp_path / "eval_validation.npz")
    sources = {i: shapes.make_example(0, "validation", i, image_size=32) for i in range(8)}
    rescored = [oracle.score(img, shapes.Scene.from_features(sources[i], 32)) for i, img in enumerate(saved["images"])]
    assert [str(p) for p in saved["prompts"]] == [sources[i]["prompt"] for i in range(8)]
    assert np.mean([s["all_correct"] for s in rescored]) == report["validation"]["all"]["all_correct"]
    assert np.mean([s["colour"] for s in rescored]) == pytest.approx(report["validation"]["all"]["colour"])

    # What the web page's DALL·E tab calls (tests_browser/ drives the page itself in Chromium).
    import chex

    from dalle_jax import serve

    models = serve.Models(tmp_path)
    assert models.offered() == ["dalle"]
    pictures = serve.dalle_samples(models, "a small red circle", 2, 0.9, 0, 1.0, 0)
    assert len(pictures) == 2
    chex.assert_shape(pictures, (32, 32, 3))
    again = serve.dalle_samples(models, "a small red circle", 2, 0.9, 0, 1.0, 0)
    np.testing.assert_array_equal(np.stack(pictures), np.stack(again))  # seeded: the same request, the same pictures
    for args, message in (((0, 0.9, 0, 1.0, 0), "Samples must be"), ((2, 9.0, 0, 1.0, 0), "Temperature must be"),
                          ((2, 0.9, 0, 0.0, 0), "Top-p must be"), ((2, 0.9, 0, 1.0, 4), "needs a CLIP")):
        with pytest.raises(serve.InputError, match=message):
            serve.dalle_samples(models, "a small red circle", *args)


@pytest.mark.xdist_group("trained_dalle")
def test_clip_training_reranking_and_clip_score(trained_dalle, tiny_data_dir, tmp_path):
    shutil.copytree(trained_dalle, tmp_path, dirs_exist_ok=True)
    dalle = dalle_args(tiny_data_dir, tmp_path)
    clip = ["--config", "configs/shapes_clip.py:tiny", *dalle[2:]]
    with pytest.raises(AssertionError, match="--rerank needs a CLIP"):
        run("generate", *dalle, "--prompt", "a small red circle", "--rerank", "4")
    run("train-clip", *clip)
    logged = [json.loads(line) for line in (tmp_path / "clip" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "eval/zero_shot_shape" in row] == [2, 4]  # eval_every=2
    printed = run("eval-clip", *clip).stdout
    metrics = json.loads(printed[printed.index("{"):])
    assert 0.0 <= metrics["zero_shot_colour"] <= 1.0 and metrics["num_examples"] == 32
    out = tmp_path / "reranked.png"
    run("generate", *dalle, "--prompt", "a small red circle", "--rerank", "4", "--keep", "2", "--out", str(out))
    assert out.exists()
    run("eval", *dalle, "--rerank", "2")
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report) == {"validation", "validation_rerank2_keep1", "test_compositional",
                           "test_compositional_rerank2_keep1"}
    assert all(0.0 <= report[name]["all"]["clip_score"] <= 100.0 for name in report)
