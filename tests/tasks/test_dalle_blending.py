import ml_collections
import numpy as np
import pytest
import scipy.stats

from dalle_jax.tasks.dalle import training_caption

EXAMPLE = {"alt_text": "something red", "synthetic_caption": "a small red circle"}


def _text(rate, field="synthetic_caption"):
    return ml_collections.ConfigDict(dict(caption_field="alt_text", synthetic_caption_field=field,
                                          synthetic_caption_rate=rate))


@pytest.mark.parametrize("rate", [0.95, 0.5])
def test_synthetic_captions_are_drawn_at_the_configured_rate(rate):
    rng = np.random.default_rng(0)
    draws = 20_000
    synthetic = sum(training_caption(EXAMPLE, _text(rate), rng) == EXAMPLE["synthetic_caption"] for _ in range(draws))
    # Two-sided binomial test: a wrong rate (even 1 point off at 20k draws) fails it.
    assert scipy.stats.binomtest(synthetic, draws, rate).pvalue > 1e-3
    assert abs(synthetic / draws - rate) < 0.01


def test_without_a_synthetic_field_the_original_caption_is_read():
    rng = np.random.default_rng(0)
    assert {training_caption(EXAMPLE, _text(0.95, field=""), rng) for _ in range(100)} == {"something red"}
