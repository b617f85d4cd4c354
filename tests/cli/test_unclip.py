"""unCLIP through `run.py` on the tiny config: every stage, generation, variations, interpolation, text diffs, eval."""

import json

import numpy as np
from PIL import Image

from tests.cli.runner import run
from tests.conftest import REPO
from tests.pictures import read_pictures


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
