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


@pytest.mark.parametrize("override,allowed", [
    ("train.steps=0", False), ("train.steps=1", True), ("optim.warmup_steps=0", True),
    ("optim.warmup_steps=-1", False), ("optim.learning_rate=0", False), ("optim.learning_rate=1e-9", True),
    ("optim.ema_decay=0.999", True), ("optim.ema_decay=1", False), ("data.validation_fraction=1", True),
    ("data.validation_fraction=1.5", False), ("data.jpeg_quality=101", False), ("data.build_workers=-1", True),
    ("data.build_workers=-2", False), ("mesh.data=-1", True), ("mesh.data=0", False), ("mesh.fsdp=2", True),
])
def test_out_of_range_values_name_the_key_before_anything_starts(override, allowed):
    if allowed:
        load_config(TOY, [override])
    else:
        key, value = override.split("=")
        with pytest.raises(ConfigError, match=rf"'{key}' is {value}\S*; it must be"):
            load_config(TOY, [override])


def test_a_string_outside_its_choices_names_the_choices():
    unclip = str(REPO / "configs/shapes_unclip.py:tiny")
    config = load_config(unclip, ["decoder.model.attention_impl=cudnn", "decoder.model.remat=dots",
                                  "prior.model.dtype=bfloat16", "optim.mu_dtype=bfloat16"])
    assert (config.decoder.model.attention_impl, config.optim.mu_dtype) == ("cudnn", "bfloat16")
    with pytest.raises(ConfigError, match=r"'decoder.model.attention_impl' is 'flash'; it must be one of "
                                          r"\('auto', 'einsum', 'einsum_vjp', 'xla', 'cudnn'\)"
                                          r".*'model.dtype' is 'fp8'"):
        load_config(unclip, ["decoder.model.attention_impl=flash", "model.dtype=fp8"])


def test_ranges_hold_in_stage_sections_and_every_problem_is_listed():
    with pytest.raises(ConfigError, match=r"'decoder.sample.guidance_scale' is -1.0.*'train.batch_size' is 0"):
        load_config(str(REPO / "configs/shapes_unclip.py:tiny"),
                    ["decoder.sample.guidance_scale=-1", "train.batch_size=0"])


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
           "shapes_clip": ("default", "tiny"), "shapes_unclip": ("default", "tiny", "cascade", "tiny_cascade"),
           "shapes_dalle3": ("default", "tiny"), "own_data_dalle": ("default", "paper", "cpu", "tiny"),
           "own_data_unclip": ("default", "tiny"), "karlo": ("default",)}


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
