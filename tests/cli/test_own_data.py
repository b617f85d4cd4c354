"""A folder of the user's own images through `run.py`, and released weights imported and used on it."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.cli.runner import run
from tests.conftest import REPO
from tests.pictures import read_pictures


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
