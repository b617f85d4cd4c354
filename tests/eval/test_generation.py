import numpy as np

from dalle_jax.data import shapes
from dalle_jax.eval import generation


def _scenes(count):
    return [shapes.Scene.from_features(shapes.make_example(0, "validation", i, image_size=32), 32)
            for i in range(count)]


def test_candidates_are_grouped_by_prompt_and_batches_get_their_own_index():
    calls = []

    def fake(prompts, batch):
        calls.append(batch)
        return np.stack([np.full((2, 2, 3), len(p), np.uint8) for p in prompts])

    images = generation.generate_candidates(fake, ["a", "bbb"], candidates=3, batch_size=4)
    assert images.shape == (2, 3, 2, 2, 3)
    assert calls == [0, 1]
    assert np.all(images[0] == 1) and np.all(images[1] == 3)


def test_a_perfect_generator_scores_everything_and_an_empty_one_nothing():
    scenes = _scenes(12)
    perfect = np.stack([shapes.render(s) for s in scenes])
    summary = generation.score_images(perfect, scenes)
    assert summary["all"]["all_correct"] == 1.0 and summary["all"]["n"] == 12
    blank = np.full_like(perfect, shapes.BACKGROUND)
    assert generation.score_images(blank, scenes)["all"]["all_correct"] == 0.0


def test_markdown_table_has_a_row_per_group():
    scenes = _scenes(6)
    summary = generation.score_images(np.stack([shapes.render(s) for s in scenes]), scenes)
    table = generation.markdown_table({"validation": summary})
    assert table.splitlines()[0].startswith("| split | objects | n |")
    assert len(table.splitlines()) == 2 + len(summary)
    assert "| validation | all | 6 | 100.0 |" in table
    summary["all"]["clip_score"] = 31.25
    with_clip = generation.markdown_table({"validation": summary}).splitlines()
    assert with_clip[0].endswith("| clip_score |") and with_clip[-1].endswith("| 31.2 |")
