import pytest

from dalle_jax.config import ConfigError, apply_overrides, base_config, load_config
from tests.conftest import REPO

TOY = str(REPO / "configs/shapes_toy.py")


def test_overrides_are_typed():
    config = load_config(TOY, ["train.steps=12", "optim.learning_rate=3", "train.progress_bar=false",
                               "data.num_objects_probs=(1, 0, 0)", "data.name=my_dataset"])
    assert config.train.steps == 12 and isinstance(config.train.steps, int)
    assert config.optim.learning_rate == 3.0 and isinstance(config.optim.learning_rate, float)
    assert config.train.progress_bar is False
    assert tuple(config.data.num_objects_probs) == (1, 0, 0)
    assert config.data.name == "my_dataset"


def test_misspelt_key_names_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.stepz'; did you mean 'train.steps'"):
        load_config(TOY, ["train.stepz=3"])
    with pytest.raises(ConfigError, match=r"'trian.steps'.*'train.steps'"):
        load_config(TOY, {"trian.steps": 3})


def test_ill_typed_value_names_the_key():
    with pytest.raises(ConfigError, match="config key 'train.steps'"):
        load_config(TOY, ["train.steps=many"])


def test_variants_and_bad_variant():
    assert load_config(TOY + ":tiny").data.image_size == 32
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        load_config(TOY + ":huge")


def test_missing_file_and_locked_config():
    with pytest.raises(ConfigError, match="config file not found: nowhere.py"):
        load_config("nowhere.py")
    config = load_config(TOY)
    with pytest.raises(AttributeError):
        config.train.new_key = 1


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(base_config(), ["train.steps"])


SHIPPED = {"shapes_toy": ("default", "tiny"), "shapes_dalle": ("default", "demo", "tiny", "paper"),
           "shapes_clip": ("default", "tiny"), "shapes_unclip": ("default", "tiny"),
           "shapes_dalle3": ("default", "tiny"), "own_data_dalle": ("default", "paper", "cpu", "tiny"),
           "own_data_unclip": ("default", "tiny")}


def test_every_shipped_config_loads_in_every_variant():
    assert set(SHIPPED) == {p.stem for p in (REPO / "configs").glob("*.py")}
    for name, variants in SHIPPED.items():
        for variant in variants:
            assert load_config(str(REPO / f"configs/{name}.py:{variant}")).task


def test_own_data_configs_are_256_px_with_a_32_by_32_token_grid():
    from dalle_jax.tasks.decoder import UpsamplerTask

    from dalle_jax.tasks.image_tokenizer import downsample_factor

    for variant in ("default", "paper"):
        dalle = load_config(str(REPO / f"configs/own_data_dalle.py:{variant}"))
        assert dalle.data.image_size == 256 and dalle.data.image_size // downsample_factor(dalle.image_tokenizer) == 32
    assert (dalle.image_tokenizer.num_codes, dalle.text.max_length) == (8_192, 256)  # the paper's
    unclip = load_config(str(REPO / "configs/own_data_unclip.py"))
    assert unclip.data.image_size == 256 and unclip.decoder.image_size == 64
    assert UpsamplerTask.from_config(unclip).factor == 4  # 64 → 256; the sizes are checked there
