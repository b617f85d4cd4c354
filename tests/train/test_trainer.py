import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dalle_jax.config import apply_overrides
from dalle_jax.data import pipeline
from dalle_jax.nn import conv
from dalle_jax.tasks.toy import ToyTask
from dalle_jax.train import checkpoint, optim, partitioning, trainer
from dalle_jax.train.metric_writer import read_metrics
from tests.hlo import ynnpack_operations


def _train(config, workdir, **kwargs):
    return trainer.train(config, workdir, ToyTask.from_config(config), **kwargs)


def _assert_bitwise_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_state_shapes_and_learning(tiny_config, tmp_path):
    apply_overrides(tiny_config.unlock(), {"train.steps": 40, "train.log_every": 40, "optim.learning_rate": 3e-3,
                                           "train.peak_flops": 1e12})
    state = _train(tiny_config, tmp_path)
    assert int(state.step) == 40
    chex.assert_shape(state.params["patch_embed"]["kernel"], (4, 4, 3, tiny_config.model.embed_dim))
    chex.assert_shape(state.params["hidden"]["kernel"], (tiny_config.model.embed_dim, tiny_config.model.mlp_dim))
    chex.assert_tree_all_finite(state.params)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.params))
    rows = read_metrics(tmp_path)
    initial_loss = np.log(3) + 8 * np.log(2) / 8  # zero-initialised head: uniform predictions
    assert rows[-1]["step"] == 40 and rows[-1]["loss"] < initial_loss - 0.3
    # Model FLOPs, by hand: patch convolution, hidden layer and head of each image, 3 × for training.
    (patch, _, _, embed), (mlp, outputs) = state.params["patch_embed"]["kernel"].shape, state.params["head"]["kernel"].shape
    patches = (tiny_config.data.image_size // patch) ** 2
    per_image = 2 * patches * embed * patch * patch * 3 + 2 * patches * embed * mlp + 2 * mlp * outputs
    flops_per_step = 3 * tiny_config.train.batch_size * per_image
    np.testing.assert_allclose(rows[-1]["perf/model_flops_per_sec"], flops_per_step * rows[-1]["steps_per_sec"],
                               rtol=1e-5)
    np.testing.assert_allclose(rows[-1]["perf/mfu"], rows[-1]["perf/model_flops_per_sec"] / 1e12, rtol=1e-5)
    assert (tmp_path / "tensorboard").is_dir() and any((tmp_path / "tensorboard").iterdir())
    saved = trainer.run_config(tmp_path)
    assert saved.train.steps == 40 and saved.optim.learning_rate == 3e-3
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere" / "config.json"))):
        trainer.run_config(tmp_path / "nowhere")


def test_params_ema_is_the_warmed_up_average_of_the_trajectory():
    decay, lr = 0.9, 0.1
    optimizer = optax.chain(optax.sgd(lr), optim.params_ema(decay))
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = jax.random.normal(jax.random.key(0), (12, 3))
    opt_state = optimizer.init(params)
    naive_params, naive_ema = np.asarray(params["w"]), np.asarray(params["w"])
    for t, g in enumerate(grads):
        updates, opt_state = optimizer.update({"w": g}, opt_state, params)
        params = optax.apply_updates(params, updates)
        naive_params = naive_params - lr * np.asarray(g)
        d = min(decay, (1 + t) / (10 + t))
        naive_ema = d * naive_ema + (1 - d) * naive_params
    np.testing.assert_allclose(params["w"], naive_params, rtol=1e-6)
    np.testing.assert_allclose(optim.averaged_params(opt_state)["w"], naive_ema, rtol=1e-5)
    assert optim.averaged_params(optax.adam(1e-3).init(params)) is None


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_is_bitwise_exact(tiny_config, tmp_path, ema_decay):
    tiny_config.optim.ema_decay = ema_decay
    straight = _train(tiny_config, tmp_path / "straight")
    half = tiny_config.train.steps // 2
    _train(tiny_config, tmp_path / "resumed", stop_at_step=half)
    assert checkpoint.Checkpointer(tmp_path / "resumed/checkpoints", save_every=1, keep=3).latest_step() == half
    resumed = _train(tiny_config, tmp_path / "resumed", resume=True)
    assert int(resumed.step) == int(straight.step) == tiny_config.train.steps
    _assert_bitwise_equal(resumed.params, straight.params)
    _assert_bitwise_equal(resumed.opt_state, straight.opt_state)
    straight_rows, resumed_rows = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["loss"] for r in straight_rows] == [r["loss"] for r in resumed_rows]
    # Inference loads the EMA when the run keeps one.
    loaded = trainer.load_variables(tiny_config, tmp_path / "resumed", ToyTask.from_config(tiny_config))["params"]
    _assert_bitwise_equal(loaded, straight.params if not ema_decay else optim.averaged_params(straight.opt_state))
    if ema_decay:
        assert not np.allclose(loaded["hidden"]["kernel"], straight.params["hidden"]["kernel"])
    # From the example's shapes the run saved, without the data set; runs saved before that read one example.
    spec = json.loads((tmp_path / "resumed" / trainer.EXAMPLE_SPEC).read_text())
    assert spec == {"image": {"shape": [32, 32, 3], "dtype": "uint8"}, "count": {"shape": [], "dtype": "int32"},
                    "colours": {"shape": [8], "dtype": "float32"}}
    (tmp_path / "resumed" / trainer.EXAMPLE_SPEC).unlink()
    again = trainer.load_variables(tiny_config, tmp_path / "resumed", ToyTask.from_config(tiny_config))["params"]
    _assert_bitwise_equal(again, loaded)


def test_refuses_to_overwrite_a_run(tiny_config, tmp_path):
    _train(tiny_config, tmp_path, stop_at_step=2)
    with pytest.raises(trainer.RunExistsError, match="--resume"):
        _train(tiny_config, tmp_path)


def test_keeps_the_last_checkpoints(tiny_config, tmp_path):
    apply_overrides(tiny_config.unlock(), {"train.steps": 10, "train.save_every": 2, "train.keep_checkpoints": 2})
    _train(tiny_config, tmp_path)
    assert checkpoint.Checkpointer(tmp_path / "checkpoints", save_every=2, keep=2).all_steps() == [8, 10]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
    _train(tiny_config, tmp_path, stop_at_step=4)
    # The same run continued with an absurd learning rate: parameters overflow, the loss follows.
    apply_overrides(tiny_config.unlock(), {"optim.learning_rate": 1e38, "train.save_every": 1})
    with pytest.raises(trainer.NonFiniteLossError, match=r"at step (\d+); training stopped") as stopped:
        _train(tiny_config, tmp_path, resume=True)
    bad_step = int(re.search(r"at step (\d+)", str(stopped.value)).group(1))
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", save_every=1, keep=3)
    assert 4 < bad_step <= tiny_config.train.steps
    assert ckpt.latest_step() == bad_step - 1 and f"(step {bad_step - 1})" in str(stopped.value)
    # The last checkpoint restores and is finite.
    apply_overrides(tiny_config, {"optim.learning_rate": 1e-3, "train.steps": bad_step - 1})
    restored = _train(tiny_config, tmp_path, resume=True)
    assert int(restored.step) == bad_step - 1
    chex.assert_tree_all_finite(restored.params)


@dataclasses.dataclass(frozen=True)
class _SignalAfter(ToyTask):
    """The toy task that sends itself SIGTERM while preparing its `after`-th example."""

    after: int = 0
    counter: list = dataclasses.field(default_factory=lambda: [0])

    def preprocess(self, example, rng):
        self.counter[0] += 1
        if self.counter[0] == self.after:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().preprocess(example, rng)


def test_sigterm_saves_and_resume_loses_nothing(tiny_config, tmp_path):
    straight = _train(tiny_config, tmp_path / "straight")
    task = _SignalAfter(ToyTask.from_config(tiny_config).model, after=3 * tiny_config.train.batch_size)
    with pytest.raises(trainer.TrainingInterrupted) as stopped:
        trainer.train(tiny_config, tmp_path / "stopped", task)
    assert 1 <= stopped.value.step < tiny_config.train.steps
    ckpt = checkpoint.Checkpointer(tmp_path / "stopped/checkpoints", save_every=1, keep=3)
    assert ckpt.latest_step() == stopped.value.step
    resumed = _train(tiny_config, tmp_path / "stopped", resume=True)
    _assert_bitwise_equal(resumed.params, straight.params)


def test_checkpoint_that_does_not_fit_names_the_arrays_and_the_config_keys(tiny_config, tmp_path):
    _train(tiny_config, tmp_path, stop_at_step=2)
    saved_config = (tmp_path / "config.json").read_text()
    wider = tiny_config.copy_and_resolve_references()
    apply_overrides(wider, {"model.mlp_dim": tiny_config.model.mlp_dim * 2, "train.steps": 50})
    arrays = r"params/hidden/kernel: checkpoint \(32, 64\) vs config \(32, 128\)"
    keys = r"the config differs from the run's \(.*config.json\) in: model.mlp_dim: 64 → 128$"  # not train.steps
    for load in (lambda: _train(wider, tmp_path, resume=True),  # resume
                 lambda: trainer.load_variables(wider, tmp_path, ToyTask.from_config(wider))):  # inference
        with pytest.raises(checkpoint.CheckpointMismatchError, match=f"(?s){arrays}.*{keys}"):
            load()
    assert (tmp_path / "config.json").read_text() == saved_config  # nothing written before the check
    assert trainer.config_changes(tmp_path, tiny_config) == []


def test_imported_weights_that_do_not_fit_name_the_config_keys(tiny_config, tmp_path):
    task = ToyTask.from_config(tiny_config)
    example = task.preprocess(pipeline.load_sources(tiny_config.data)["train"][0], np.random.default_rng(0))
    variables = nn.unbox(task.init(jax.random.key(0), {k: np.asarray(v)[None] for k, v in example.items()}))
    trainer.write_imported_run(tmp_path / "run", tiny_config, example, variables)
    wider = tiny_config.copy_and_resolve_references()
    apply_overrides(wider, {"model.embed_dim": 16})
    mismatch = r"(?s)imported does not fit.*model.embed_dim: 32 → 16"
    with pytest.raises(checkpoint.CheckpointMismatchError, match=mismatch):
        trainer.load_variables(wider, tmp_path / "run", ToyTask.from_config(wider))
    loaded = trainer.load_variables(tiny_config, tmp_path / "run", task)
    _assert_bitwise_equal(loaded, variables)


@dataclasses.dataclass(frozen=True, eq=False)
class _PretrainedToy(ToyTask):
    """A toy task that starts from given (pretrained) parameters."""

    pretrained: dict = None

    def initial_params(self, params):
        return self.pretrained


def test_a_fresh_run_starts_from_the_tasks_initial_params(tiny_config, tmp_path):
    apply_overrides(tiny_config.unlock(), {"train.steps": 1, "train.save_every": 1, "optim.ema_decay": 0.99})
    fresh = _train(tiny_config, tmp_path / "fresh")
    model = ToyTask.from_config(tiny_config).model
    pretrained = jax.tree.map(lambda x: np.asarray(x) + 1.0, fresh.params)
    tuned = trainer.train(tiny_config, tmp_path / "tuned", _PretrainedToy(model, pretrained=pretrained))
    # One Adam step (at most about the learning rate per weight) away from the given parameters.
    for params in (tuned.params, optim.averaged_params(tuned.opt_state)):  # the EMA starts there too
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2 * tiny_config.optim.learning_rate),
                     params, pretrained)
    with pytest.raises(ValueError, match="initial_params changed the parameter tree"):
        trainer.starting_params(_PretrainedToy(model, pretrained={"other": 0.0}), fresh.params, None)
    narrow = jax.tree.map(lambda x: x[..., :1], pretrained)  # fine-tuning weights of another width
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"the weights toy starts from does not fit"):
        trainer.train(tiny_config, tmp_path / "narrow", _PretrainedToy(model, pretrained=narrow))
    assert not (tmp_path / "narrow" / "config.json").exists()


def test_a_damaged_newest_checkpoint_is_named_with_the_intact_one_and_the_command(tiny_config, tmp_path):
    apply_overrides(tiny_config.unlock(), {"train.save_every": 2})
    _train(tiny_config, tmp_path, stop_at_step=4)  # checkpoints 2 and 4
    files = sorted(p for p in (tmp_path / "checkpoints" / "4" / "state").rglob("*") if p.is_file())
    victim = max(files, key=lambda p: p.stat().st_size)  # the array data (a deleted file reads the same)
    victim_size = victim.stat().st_size
    victim.write_bytes(victim.read_bytes()[: victim_size // 2])
    expected = (rf"checkpoint {tmp_path}/checkpoints/4 is damaged \(.*\); step 2 is intact: set the damaged one "
                rf"aside with `mv {tmp_path}/checkpoints/4 {tmp_path}/checkpoints/4.damaged`")
    with pytest.raises(checkpoint.CheckpointDamagedError, match=expected):
        _train(tiny_config, tmp_path, resume=True)
    with pytest.raises(checkpoint.CheckpointDamagedError, match=expected):  # inference says the same
        trainer.load_variables(tiny_config, tmp_path, ToyTask.from_config(tiny_config))
    assert victim.stat().st_size == victim_size // 2  # nothing removed or rewritten
    os.rename(tmp_path / "checkpoints" / "4", tmp_path / "checkpoints" / "4.damaged")  # the command it gave
    resumed = _train(tiny_config, tmp_path, resume=True)
    assert int(resumed.step) == tiny_config.train.steps
    assert (tmp_path / "checkpoints" / "4.damaged").exists()


def test_a_full_disk_stops_training_clearly_and_resume_loses_nothing(tiny_config, tiny_sources, tmp_path):
    """A write refused part way (full_disk_check.py caps file sizes once step 4 is saved) stops the
    run naming the directory and the intact checkpoint; with room again, --resume ends where an
    uninterrupted run does."""
    from tests.conftest import REPO

    result = subprocess.run(
        [sys.executable, str(REPO / "tests/train/full_disk_check.py"), str(REPO / "configs/shapes_toy.py:tiny"),
         tiny_config.data.data_dir, str(tmp_path / "run")], capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))  # pipes: a file would be capped too
    assert result.returncode == 3, result.stderr[-3000:]
    assert re.search(rf"saving a checkpoint in {tmp_path}/run/checkpoints failed \(.*File too large.*\); the "
                     r"checkpoint of step 4 is intact\. Make room there .* and continue with --resume", result.stdout)
    assert checkpoint.Checkpointer(tmp_path / "run/checkpoints", save_every=1, keep=None).all_steps() == [2, 4]

    apply_overrides(tiny_config.unlock(), {"train.steps": 12, "train.save_every": 2, "train.log_every": 4})
    resumed = _train(tiny_config, tmp_path / "run", resume=True)
    straight = _train(tiny_config, tmp_path / "straight")
    _assert_bitwise_equal((resumed.params, resumed.opt_state), (straight.params, straight.opt_state))


def test_a_damaged_run_file_is_named_with_the_command_that_writes_it_again(tmp_path):
    (tmp_path / "config.json").write_text('{"model": {"width": 3')  # cut by a kill or a full disk
    (tmp_path / trainer.EXAMPLE_SPEC).write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'} is damaged .*`train --resume`"):
        trainer.run_config(tmp_path)
    with pytest.raises(ValueError, match=rf"{tmp_path / trainer.EXAMPLE_SPEC} is damaged"):
        trainer.saved_example(None, tmp_path, None)


def test_microbatches_that_do_not_split_the_batch_are_refused_by_name(tiny_config):
    mesh = partitioning.make_mesh(tiny_config.mesh)
    apply_overrides(tiny_config.unlock(), {"train.batch_size": 8, "train.microbatches": 4})
    assert trainer.check_microbatches(tiny_config, mesh) == 4
    apply_overrides(tiny_config, {"train.microbatches": 3})
    with pytest.raises(ValueError, match=r"train.batch_size=8 does not split into train.microbatches=3 slices"):
        trainer.check_microbatches(tiny_config, mesh)


def test_step_compiles_with_the_tasks_compiler_options(tiny_config, tiny_sources):
    """`make_step_fn` compiles with the task's `compiler_options`: a convolutional task's step on this CPU
    leaves its matrix products and convolutions to XLA's own kernels, none to YNNPACK."""

    @dataclasses.dataclass(frozen=True)
    class ConvolutionalToy(ToyTask):
        compiler_options: dict | None = None

    mesh = partitioning.make_mesh(tiny_config.mesh)
    rules = partitioning.rules_from_config(tiny_config.sharding.rules)
    optimizer = optim.make_optimizer(tiny_config.optim, tiny_config.train.steps)
    plain = ToyTask.from_config(tiny_config)
    example = plain.preprocess(tiny_sources["train"][0], np.random.default_rng(0))
    batch = {k: np.stack([v] * tiny_config.train.batch_size) for k, v in example.items()}

    def ynnpack_products(options) -> int:
        task = ConvolutionalToy(plain.model, compiler_options=options)
        init, shardings, _ = trainer.sharded_state_layout(tiny_config, task, optimizer, example, mesh)
        step = trainer.make_step_fn(task, optimizer, mesh, rules, shardings)
        operations = ynnpack_operations(step.lower(init(), batch).compile())
        return operations["dot"] + operations["convolution"]

    options = conv.compiler_options()
    assert ynnpack_products(options) == 0
    if options is not None:  # this XLA hands matrix products to YNNPACK unless told not to
        assert ynnpack_products(None) > 0
