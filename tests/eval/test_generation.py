import numpy as np

from dalle_jax.data import shapes
from dalle_jax.eval import generation


def _scenes(count):
    return [shapes.Scene.from_features(shapes.make_example(0, "validation", i, image_size=32), 32)
            for i in range(count)]


def test_a_perfect_generator_scores_everything_and_an_empty_one_nothing():
    scenes = _scenes(12)
    by_prompt = {scene.describe(): shapes.render(scene) for scene in scenes}
    calls = []

    def perfect(prompts, batch):
        calls.append(batch)
        return np.stack([by_prompt[p] for p in prompts])

    summary, images = generation.score_generator(perfect, scenes, batch_size=5)
    assert calls == [0, 1, 2]  # each batch gets its own index (its own noise)
    assert images.shape == (12, 32, 32, 3)
    assert summary["all"]["all_correct"] == 1.0 and summary["all"]["n"] == 12
    blank = lambda prompts, batch: np.full((len(prompts), 32, 32, 3), shapes.BACKGROUND, np.uint8)
    assert generation.score_generator(blank, scenes, batch_size=5)[0]["all"]["all_correct"] == 0.0


def test_markdown_table_has_a_row_per_group():
    scenes = _scenes(6)
    summary, _ = generation.score_generator(lambda p, b: np.stack([shapes.render(s) for s in scenes]), scenes,
                                            batch_size=6)
    table = generation.markdown_table({"validation": summary})
    assert table.splitlines()[0].startswith("| split | objects | n |")
    assert len(table.splitlines()) == 2 + len(summary)
    assert "| validation | all | 6 | 100.0 |" in table
