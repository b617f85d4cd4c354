import numpy as np
from PIL import Image

from dalle_jax.data import shapes
from dalle_jax.experiments import dalle3


def test_arms_prompts_takes_the_first_single_then_two_object_prompts():
    assert dalle3.arms_prompts([2, 1, 3, 1, 2, 1, 2], per_count=2) == [1, 3, 0, 4]
    assert dalle3.arms_prompts([1, 3, 3], per_count=2) == [0]  # fewer than asked: what there is


def test_arms_picture_puts_each_arms_sample_for_the_same_prompt_in_its_row(tmp_path):
    rng = np.random.default_rng(0)
    scenes = [shapes.sample_scene(rng, 32) for _ in range(12)]
    prompts = np.array([s.describe() for s in scenes])
    arms = ("alt", "short", "descriptive")
    images = {arm: rng.integers(0, 256, (len(scenes), 32, 32, 3), dtype=np.uint8) for arm in arms}
    for arm in arms:
        (tmp_path / f"dalle_{arm}").mkdir()
        np.savez_compressed(tmp_path / f"dalle_{arm}" / "eval_validation.npz", images=images[arm], prompts=prompts)

    grid = np.asarray(Image.open(dalle3.save_arms_picture(tmp_path, arms, scenes, per_count=2)))

    shown = dalle3.arms_prompts([len(s.objects) for s in scenes], per_count=2)
    assert len(shown) == 4  # 12 random scenes hold two of each
    tile, label = 96, 11 * 5  # 32 px enlarged 3×, five lines of label
    assert grid.shape == (4 + 3 * (tile + label + 4), 4 + len(shown) * (tile + 4), 3)
    for row, arm in enumerate(arms):
        for column, index in enumerate(shown):
            y, x = 4 + row * (tile + label + 4), 4 + column * (tile + 4)
            np.testing.assert_array_equal(grid[y:y + tile, x:x + tile], images[arm][index].repeat(3, 0).repeat(3, 1))


def test_no_arms_picture_without_one_or_two_object_prompts(tmp_path):
    scenes = [s for s in (shapes.sample_scene(np.random.default_rng(i), 32) for i in range(200))
              if len(s.objects) == 3][:4]
    (tmp_path / "dalle_alt").mkdir()
    np.savez_compressed(tmp_path / "dalle_alt" / "eval_validation.npz", images=np.zeros((4, 32, 32, 3), np.uint8),
                        prompts=np.array([s.describe() for s in scenes]))
    assert dalle3.save_arms_picture(tmp_path, ("alt",), scenes) is None
    assert not (tmp_path / "arms.png").exists()
