import numpy as np
import pytest

from dalle_jax.config import load_config, stage_config
from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask, codebook_stats
from dalle_jax.train import trainer
from dalle_jax.train.metric_writer import read_metrics
from tests.conftest import REPO


@pytest.mark.parametrize("kind", ["vqvae", "dvae"])
def test_trains_through_the_trainer_and_logs_its_metrics(kind, tiny_data_dir, tmp_path):
    config = load_config(str(REPO / "configs/shapes_dalle.py:tiny"),
                         {"data.data_dir": str(tiny_data_dir), "image_tokenizer.kind": kind,
                          "train.progress_bar": False})
    config = stage_config(config, "image_tokenizer")
    state = trainer.train(config, tmp_path, ImageTokenizerTask.from_config(config))
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


def test_codebook_stats():
    codes = np.array([[0, 0, 1, 1]])
    stats = codebook_stats(codes, num_codes=4)
    np.testing.assert_allclose(stats["codebook_usage"], 0.5)
    np.testing.assert_allclose(stats["codebook_perplexity"], 2.0, rtol=1e-6)
