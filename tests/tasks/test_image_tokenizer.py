import numpy as np
import pytest

from dalle_jax import viz
from dalle_jax.config import load_config, stage_config
from dalle_jax.data import pipeline
from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask, codebook_stats
from dalle_jax.train import trainer
from dalle_jax.train.metric_writer import read_metrics
from tests.conftest import REPO
from tests.pictures import read_pictures, tile


@pytest.mark.parametrize("kind", ["vqvae", "dvae"])
def test_trains_through_the_trainer_and_logs_its_metrics(kind, tiny_data_dir, tmp_path):
    config = load_config(str(REPO / "configs/shapes_dalle.py:tiny"),
                         {"data.data_dir": str(tiny_data_dir), "image_tokenizer.kind": kind,
                          "train.progress_bar": False, "train.image_every": 2})
    config = stage_config(config, "image_tokenizer")
    task = ImageTokenizerTask.from_config(config)
    state = trainer.train(config, tmp_path, task)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        assert np.isfinite(row["psnr"]) and 0 < row["codebook_usage"] <= 1
        assert 1 <= row["codebook_perplexity"] <= config.image_tokenizer.num_codes
    if kind == "dvae":
        # step s trains with tau(s - 1): 1 -> 1/16 over 4 steps, beta 0 -> 6.6 over 2
        np.testing.assert_allclose(rows[-1]["temperature"], (1 / 16) ** (3 / 4), rtol=1e-5)
        np.testing.assert_allclose(rows[-1]["kl_weight"], 6.6, rtol=1e-6)
    else:
        assert set(state.model_state) == {"codebook"}  # the EMA codebook rides in the model state

    # TensorBoard: every 2 steps, the validation images above their round trip through the codes.
    (tag, pictures), = read_pictures(tmp_path).items()
    assert tag == "pictures/reconstructions" and [step for step, _ in pictures] == [2, 4]
    images = np.stack([e["image"] for e in pipeline.first_examples(config.data, "validation")])
    codes = task.model.apply({"params": state.params, **state.model_state}, images, method="encode")
    rebuilt = np.asarray(task.model.apply({"params": state.params, **state.model_state}, codes, method="decode"))
    scale = viz.tile_scale(32)
    for i in (0, 7):
        for row, expected in ((0, images[i]), (1, rebuilt[i])):
            shown = tile(pictures[-1][1], row * 8 + i, columns=8, size=32 * scale)
            np.testing.assert_array_equal(shown, expected.repeat(scale, 0).repeat(scale, 1))


def test_codebook_stats():
    codes = np.array([[0, 0, 1, 1]])
    stats = codebook_stats(codes, num_codes=4)
    np.testing.assert_allclose(stats["codebook_usage"], 0.5)
    np.testing.assert_allclose(stats["codebook_perplexity"], 2.0, rtol=1e-6)
