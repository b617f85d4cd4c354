"""`run.py` as a user runs it: help, config errors, and the whole DALL·E pipeline on the tiny config."""

import fcntl
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.pictures import read_pictures


def run(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True, env=env,
                            timeout=600, cwd=REPO)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_help_lists_the_commands():
    out = run("--help").stdout
    for command in ("build-data", "train-text-tokenizer", "train-image-tokenizer", "train", "generate", "eval"):
        assert command in out


def test_misspelt_key_and_unknown_command_are_clear_errors(tmp_path):
    result = run("train", "--config", "configs/shapes_toy.py", "--workdir", str(tmp_path),
                 "--config.train.stepz=3", check=False)
    assert result.returncode != 0
    assert "unknown config key 'train.stepz'; did you mean 'train.steps'" in result.stderr
    assert not (tmp_path / "toy").exists()  # nothing started
    result = run("trian", "--config", "configs/shapes_toy.py", check=False)
    assert result.returncode != 0 and "expected one command of" in result.stderr


def test_user_mistakes_end_in_one_line_without_a_traceback(tmp_path, tiny_sources, tiny_data_dir):
    from tests.data import own_data

    toy = ["--config", "configs/shapes_toy.py:tiny", "--workdir", str(tmp_path)]
    dalle = ["--config", "configs/shapes_dalle.py:tiny", "--workdir", str(tmp_path)]
    dalle3 = ["--config", "configs/shapes_dalle3.py:tiny", "--workdir", str(tmp_path)]
    unclip = ["--config", "configs/shapes_unclip.py:tiny", "--workdir", str(tmp_path)]
    files = {name: tmp_path / name for name in ("empty.jpg", "bomb.png", "text.png", "truncated.jpg", "damaged.png")}
    for name, path in files.items():
        path.write_bytes(own_data.bad_images()[name][0])
    (tmp_path / "a_file").write_text("")
    prompts = ["--prompt", "a", "--prompt", "b"]
    mistakes = [
        # Every image command refuses a file it cannot read, naming it, before loading a model.
        (["caption", *dalle3, "--image", str(files["empty.jpg"])], f"cannot read image {files['empty.jpg']}: empty"),
        (["variations", *unclip, "--image", str(files["bomb.png"])],
         f"cannot read image {files['bomb.png']}: too_many_pixels"),
        (["interpolate", *unclip, "--image", str(files["truncated.jpg"]), "--image", str(files["text.png"])],
         f"cannot read image {files['truncated.jpg']}: corrupt_image"),
        (["text-diff", *unclip, "--image", str(files["damaged.png"]), *prompts],
         f"cannot read image {files['damaged.png']}: corrupt_image"),
        (["check-oracle", *toy, "--prompt", "x"], "check-oracle does not read --prompt (the flags it reads: --num)"),
        (["eval", *dalle, "--num-samples", "2"], "eval does not read --num-samples"),
        (["generate", *dalle, "--prompt", "a", "--keep", "2"], "--keep chooses among --rerank N candidates"),
        (["show-data", *toy, "--out", str(tmp_path / "grid.txt")], f"--out {tmp_path / 'grid.txt'}: name a PNG"),
        (["show-data", *toy, f"--config.data.data_dir={tiny_data_dir}", "--split", "tset"],
         "--split tset is not a split of this data set; it has train, validation, test_compositional"),
        (["train", "--config", "configs/shapes_toy.py:huge"], "unknown variant 'huge' of shapes_toy.py"),
        (["train", *toy[:2], "--workdir", str(tmp_path / "a_file")], f"--workdir {tmp_path / 'a_file'} is a file"),
        (["caption", *dalle, "--image", "x.png"], "caption reads the config's 'captioner' section, which"),
        (["train", *toy, "--config.train.steps=0", "--config.optim.b2=1.5"],
         "config 'optim.b2' is 1.5; it must be in [0, 1); 'train.steps' is 0; it must be ≥ 1"),
        (["generate", *dalle, "--prompt", "a", "--num-samples", "-3"], "flag --num_samples=-3: -3 is not a positive"),
        (["show-data", *toy, "--num", "0"], "flag --num=0"),
        (["caption", *dalle, "--mode", "bogus", "--image", "x.png"], "flag --mode=bogus: value should be one of"),
        (["generate", *dalle, "--prompt", "a", "--rerank", "2", "--keep", "3"], "--keep 3 is more than the --rerank 2"),
        (["generate", "--config", "configs/shapes_dalle.py:tiny", "--workdir", str(tmp_path / "nowhere"), "--prompt",
          "a"], f"the work dir {tmp_path / 'nowhere'} does not exist"),
        (["generate", *dalle, "--prompt", "a"], f"no text tokenizer at {tmp_path / 'text_tokenizer.model'}"),
        (["import-weights", *dalle, "--kind", "hf-clip"], "import-weights needs --kind (openai-dvae or hf-clip) and"),
        (["import-weights", *dalle, "--kind", "hf-clip", "--source", str(tmp_path)], "config.json not found"),
        (["train", *toy, "--config.train.steps=many"], "config key 'train.steps': cannot set 'many'"),
        (["train", *toy, "--coordinator", "127.0.0.1:1234", "--process_id", "1"],
         "--coordinator, --process_id only mean something with --distributed"),
    ]
    for args, expected in mistakes:
        result = run(*args, check=False)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode != 0 and "Traceback" not in result.stderr, (args, result.stderr[-2000:])
        assert expected in last and last.startswith(("error:", "config error:")), (args, last)


def dalle_args(data_dir, workdir):
    return ["--config", "configs/shapes_dalle.py:tiny", f"--config.data.data_dir={data_dir}",
            "--workdir", str(workdir), "--config.train.progress_bar=false"]


@pytest.fixture(scope="session")
def trained_dalle(tiny_data_dir, tmp_path_factory, worker_id):
    """A tiny DALL·E run (both tokenizers and the transformer), trained once through the CLI for
    the tests that read it, whichever xdist worker asks first (the others wait on a lock); each
    test works on a copy."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base  # this run's directory, above each worker's
    workdir = shared / "trained_dalle"
    with open(shared / "trained_dalle.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "trained_dalle.done").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            for command in ("train-text-tokenizer", "train-image-tokenizer", "train"):
                run(command, *dalle_args(tiny_data_dir, workdir), "--config.train.image_every=4")  # pictures at the end
            (shared / "trained_dalle.done").touch()
    return workdir


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


def test_own_images_folder_through_every_stage_and_a_work_dir_that_stands_alone(tmp_path):
    """A folder of the user's images (every mode and format, broken files among them) through
    build-data and the training commands that read it: DALL·E 1's tokenizers and transformer,
    CLIP, DALL·E 3's captioner and recaptioning; eval without an oracle; then the work dir alone,
    copied where the data set is not, generates. (The unCLIP prior trains on your own images in
    test_released_weights_imported_then_used_with_no_other_flag; the decoder reads them as the
    prior does, and the shapes test trains it.)"""
    from tests.data import own_data

    expected = own_data.write_folder(tmp_path / "photos")
    data = [f"--config.data.source=folder:{tmp_path / 'photos'}", "--config.data.name=photos",
            f"--config.data.data_dir={tmp_path / 'data'}", "--workdir", str(tmp_path / "run"),
            "--config.train.progress_bar=false"]
    dalle, unclip = (["--config", f"configs/{name}.py:tiny", *data] for name in ("own_data_dalle", "own_data_unclip"))
    built = run("build-data", *dalle).stdout
    assert f"skipped {sum(expected['bad'].values())} (" in built and "build_report.json" in built
    for command, config in (("train-text-tokenizer", dalle), ("train-image-tokenizer", dalle), ("train", dalle),
                            ("train-clip", unclip)):
        run(command, *config)
    clip_eval = [json.loads(line) for line in (tmp_path / "run" / "clip" / "metrics.jsonl").read_text().splitlines()]
    assert "eval/image_to_text_recall@1" in clip_eval[-1] and "eval/zero_shot_colour" not in clip_eval[-1]

    printed = run("eval", *dalle).stdout
    assert "no oracle for image_text/photos: reporting CLIP score" in printed
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    built = json.loads((tmp_path / "data" / "image_text" / "photos" / "1.0.0" / "build_report.json").read_text())
    assert report["validation"]["n"] == min(4, built["examples"]["validation"])
    assert 0 <= report["validation"]["clip_score"] <= 100 and 0 <= report["validation"]["clip_score_true_images"] <= 100
    assert (tmp_path / "run" / "eval_validation.png").exists()

    run("train-captioner", *unclip, "--mode", "alt", "--config.train.image_every=4")
    ((step, picture),) = read_pictures(tmp_path / "run" / "captioner_alt")["pictures/captions"]
    assert step == 4 and picture.shape[1] > 4 * 96 and picture.std() > 10
    printed = run("recaption", *unclip, "--mode", "alt").stdout
    assert json.loads(printed[printed.index("{\n"): printed.rindex("}") + 1])["quality"] is None  # no truth here
    import tensorflow_datasets as tfds

    from dalle_jax.data import pipeline, recaption

    recaptioned = pipeline.TextDecoded(tfds.data_source("recaptioned/image_text_photos_alt", split="train",
                                                        data_dir=str(tmp_path / "run" / "data")))
    assert len(recaptioned) == built["examples"]["train"]
    assert recaptioned[0]["image"].shape == (32, 32, 3) and isinstance(recaptioned[0][recaption.CAPTION_FEATURE], str)

    shutil.copytree(tmp_path / "run", tmp_path / "elsewhere")
    for derived_data in ("image_tokens", "data"):  # what training computed from the data set
        shutil.rmtree(tmp_path / "elsewhere" / derived_data)
    shutil.rmtree(tmp_path / "data")
    alone = ["--config", "configs/own_data_dalle.py:tiny", "--workdir", str(tmp_path / "elsewhere"),
             f"--config.data.data_dir={tmp_path / 'nowhere'}"]
    run("generate", *alone, "--prompt", "a picture called rgb", "--num-samples", "2", "--out", str(tmp_path / "b.png"))
    assert Image.open(tmp_path / "b.png").size[0] > 2 * 32 * 3
    assert not (tmp_path / "nowhere").exists()

    from dalle_jax.config import load_config
    from dalle_jax.experiments import dalle3

    config = load_config(str(REPO / "configs/own_data_unclip.py:tiny"), {"data.source": "folder:x"})
    with pytest.raises(ValueError, match="on a data set of your own, train mode 'alt'"):
        dalle3.trained_captioner(config, tmp_path / "elsewhere", "short")


def test_build_data_with_no_usable_image_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.png").write_text("not a picture")
    (tmp_path / "empty" / "a.txt").write_text("a caption")
    result = run("build-data", "--config", "configs/own_data_dalle.py:tiny",
                 f"--config.data.source=folder:{tmp_path / 'empty'}", f"--config.data.data_dir={tmp_path}",
                 check=False)
    assert result.returncode != 0
    assert "no usable example" in result.stderr and "not_an_image" in result.stderr
    assert "Traceback" not in result.stderr


def test_unclip_pipeline_end_to_end(tmp_path):
    common = ["--config", "configs/shapes_unclip.py:tiny", f"--config.data.data_dir={tmp_path / 'data'}",
              "--workdir", str(tmp_path), "--config.train.progress_bar=false"]
    run("train-text-tokenizer", *common)
    result = run("train-prior", *common, check=False)
    assert result.returncode != 0 and "run.py train-clip" in result.stderr  # names the missing stage
    result = run("train-upsampler", *common, "--stage", "2", check=False)
    assert result.returncode != 0 and "stages 1 to 1 (upsamplers = ('upsampler',))" in result.stderr
    for command in ("train-clip", "train-prior", "train-decoder", "train-upsampler"):
        run(command, *common, "--config.train.image_every=3")  # pictures at the last step (none for CLIP, prior)
    for stage, tag, rows in (("decoder", "pictures/samples", 2), ("upsampler", "pictures/upsampled", 3)):
        ((step, picture),) = read_pictures(tmp_path / stage)[tag]
        assert step == 3 and picture.shape[0] > rows * 96 and picture.std() > 10, (stage, picture.shape)
    run("train-prior", *common, "--config.prior.kind=autoregressive")
    assert (tmp_path / "prior_autoregressive" / "pca.npz").exists()
    run("unclip-generate", *common, "--config.prior.kind=autoregressive", "--prompt",
        "a small red circle 🙂 מעגל\x07", "--num-samples", "2", "--out", str(tmp_path / "samples.png"),
        "--config.decoder.sample.candidates=2")  # each sample the better of 2 draws by CLIP
    assert Image.open(tmp_path / "samples.png").size[0] > 2 * 32 * 3  # two 32×32 samples at scale 3

    from dalle_jax.config import load_config
    from dalle_jax.data import pipeline

    config = load_config(str(REPO / "configs/shapes_unclip.py:tiny"), {"data.data_dir": str(tmp_path / "data")})
    validation = pipeline.load_sources(config.data)["validation"]
    # The images in other modes than RGB: each command takes any image Pillow reads.
    first, second = (Image.fromarray(validation[i]["image"]) for i in range(2))
    Image.fromarray(np.asarray(first.convert("L")).astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    first.convert("RGBA").save(tmp_path / "rgba.png")
    second.convert("CMYK").save(tmp_path / "cmyk.jpg")
    first.save(tmp_path / "animated.gif", save_all=True, append_images=[second], duration=100)
    image0, image1 = ["--image", str(tmp_path / "rgba.png")], ["--image", str(tmp_path / "cmyk.jpg")]
    no_data = [*common[:2], "--config.data.data_dir=/nonexistent", *common[3:]]  # sampling needs the work dir alone
    run("variations", *no_data, "--image", str(tmp_path / "grey16.png"), "--num-samples", "3")
    run("interpolate", *common, *image0, *image1, "--num-samples", "3")
    truncated = run("text-diff", *common, "--image", str(tmp_path / "animated.gif"), "--prompt", "", "--prompt",
                    "a blue circle " * 8_000, "--num-samples", "2").stderr  # the empty prompt, then a long one
    assert "text truncated from" in truncated and "(112,000 characters)" in truncated
    widths = {name: Image.open(tmp_path / name).size[0] for name in
              ("variations.png", "interpolation.png", "text_diff.png")}
    assert widths["interpolation.png"] > widths["variations.png"] > widths["text_diff.png"]  # 5, 4 and 3 tiles
    result = run("interpolate", *common, *image0, check=False)
    assert result.returncode != 0 and "interpolate needs exactly 2 --image" in result.stderr

    run("eval", *common)
    (out_dir,) = (tmp_path / "unclip_eval").iterdir()
    assert out_dir.name == "diffusion_dpm_solver_pp3_guidance3_eta1_interval0-0.7"
    report = json.loads((out_dir / "eval.json").read_text())
    assert set(report) == {"validation", "test_compositional"}  # the DALL·E 1 format
    assert report["validation"]["all"]["n"] == 4 and "clip_score" in report["validation"]["all"]
    assert (out_dir / "eval_validation.png").exists()

    import chex
    import jax

    from dalle_jax.eval import rerank
    from dalle_jax.models.pixels import to_uint8
    from dalle_jax.pipelines.unclip import Unclip

    unclip = Unclip.load(config, tmp_path)
    prompts = ["a small red circle", "a large blue square"]
    small = jax.random.uniform(jax.random.key(0), (2 * 3, 16, 16, 3), minval=-1, maxval=1)
    embed_images, embed_text = unclip.clip.embedders()
    best = np.asarray(to_uint8(rerank.best_of_candidates(small, prompts, embed_images, embed_text)))
    candidates = np.asarray(to_uint8(small)).reshape(2, 3, 16, 16, 3)
    for prompt, options, chosen in zip(prompts, candidates, best):  # the naive choice: highest cosine
        np.testing.assert_array_equal(chosen, options[np.argmax(embed_images(options) @ embed_text([prompt])[0])])

    frames = unclip.interpolate(validation[0]["image"], validation[0]["image"], 3, jax.random.key(1))
    chex.assert_shape(frames, (3, 32, 32, 3))
    for frame in frames[1:]:  # one embedding throughout: shared noise in both stages gives one image
        np.testing.assert_array_equal(frame, frames[0])


def test_released_weights_imported_then_used_with_no_other_flag(tmp_path):
    """The path from a folder of images to reranked samples with released weights: a CLIP
    snapshot imported by the command, OpenAI's dVAE imported from its tensors (here the fixture's
    small random one; reading the pickles needs PyTorch: tests_convert/ runs that command), then
    training on its tokens, generate --rerank and eval's CLIP score with the imported CLIP, the
    prior trained over it, and the captioner reading its image tower."""
    from dalle_jax.config import load_config
    from dalle_jax.weights import openai_dvae
    from tests.data import own_data
    from tests.weights import parity

    own_data.write_folder(tmp_path / "photos")
    data = [f"--config.data.source=folder:{tmp_path / 'photos'}", "--config.data.name=photos",
            f"--config.data.data_dir={tmp_path / 'data'}", "--workdir", str(tmp_path / "run"),
            "--config.train.progress_bar=false"]
    dalle = ["--config", "configs/own_data_dalle.py:tiny", "--config.image_tokenizer.kind=openai_dvae", *data]
    unclip = ["--config", "configs/own_data_unclip.py:tiny", *data]
    run("build-data", *dalle)
    printed = run("import-weights", *dalle, "--kind", "hf-clip", "--source", str(parity.FIXTURES / "clip_snapshot"))
    assert "hf-clip imported" in printed.stdout and (tmp_path / "run" / "clip" / "tokenizer.json").exists()
    again = run("import-weights", *dalle, "--kind", "hf-clip", "--source", str(parity.FIXTURES / "clip_snapshot"),
                check=False)
    assert again.returncode != 0 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
    tensors, _, _ = parity.read_dvae_fixture(parity.FIXTURES / "openai_dvae.npz")
    config = load_config(str(REPO / "configs/own_data_dalle.py:tiny"), {"image_tokenizer.kind": "openai_dvae"})
    openai_dvae.import_tensors(tensors, tmp_path / "run", config)
    refused = run("train-image-tokenizer", *dalle, check=False)
    assert refused.returncode != 0 and "imported, not trained" in refused.stderr

    run("train-text-tokenizer", *dalle)
    run("train", *dalle)
    out = tmp_path / "reranked.png"
    run("generate", *dalle, "--prompt", "a picture called rgb", "--rerank", "2", "--out", str(out))
    assert Image.open(out).size[0] >= 32
    printed = run("eval", *dalle).stdout
    assert "reporting CLIP score" in printed
    assert 0 <= json.loads((tmp_path / "run" / "eval.json").read_text())["validation"]["clip_score"] <= 100
    run("train-prior", *unclip)
    assert (tmp_path / "run" / "prior_diffusion" / "checkpoints").exists()

    # The captioner reads F(i) through the imported image tower (its training is the trainer's, tested above).
    from dalle_jax.experiments import dalle3
    from dalle_jax.tasks.captioner import CaptionerTask
    from dalle_jax.tasks.clip import TrainedClip

    overrides = {"data.source": f"folder:{tmp_path / 'photos'}", "data.name": "photos",
                 "data.data_dir": str(tmp_path / "data")}
    captioner = CaptionerTask.from_config(dalle3.captioner_config(
        load_config(str(REPO / "configs/own_data_unclip.py:tiny"), overrides), "alt"), tmp_path / "run")
    imported = TrainedClip.load(tmp_path / "run")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    pooled = captioner.config.captioner.pooled_features
    np.testing.assert_array_equal(
        np.asarray(captioner.image_features(captioner.clip_image_params, images)),
        np.asarray(imported.model.apply({"params": imported.params}, images, pooled=pooled, method="image_features")))
