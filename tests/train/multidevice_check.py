"""Run in a subprocess with 8 fake CPU devices (see test_multidevice.py); prints JSON.

Trains the toy task for a few steps on one device and on all eight (data=4, fsdp=2),
and checks where the parameters live under an `fsdp=8` mesh.
"""

import json
import sys

import jax
import numpy as np

from dalle_jax.config import load_config
from dalle_jax.tasks.toy import ToyTask
from dalle_jax.train import partitioning, trainer
from dalle_jax.train.metric_writer import read_metrics


def run(config, workdir, mesh):
    state = trainer.train(config, workdir, ToyTask.from_config(config), mesh=mesh)
    return state, [row["loss"] for row in read_metrics(workdir)]


def main(config_path, data_dir, workdir):
    overrides = {"data.data_dir": data_dir, "train.log_every": 1, "train.progress_bar": False}
    config = load_config(config_path, overrides)
    devices = jax.devices()
    one = partitioning.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices[:1])
    eight = partitioning.make_mesh({"data": 4, "fsdp": 2, "tensor": 1}, devices)
    state_1, losses_1 = run(config, f"{workdir}/one", one)
    state_8, losses_8 = run(config, f"{workdir}/eight", eight)
    param_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                     for a, b in zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_8.params)))

    fsdp = partitioning.make_mesh({"data": 1, "fsdp": 8, "tensor": 1}, devices)
    config = load_config(config_path, overrides | {"train.steps": 2})
    state_fsdp, _ = run(config, f"{workdir}/fsdp", fsdp)
    kernel = state_fsdp.params["hidden"]["kernel"]
    print(json.dumps({
        "num_devices": len(devices),
        "losses_one_device": losses_1,
        "losses_eight_devices": losses_8,
        "max_param_diff": param_diff,
        "hidden_kernel_shape": list(kernel.shape),
        "hidden_kernel_shard_shape": list(kernel.sharding.shard_shape(kernel.shape)),
        "hidden_kernel_devices": len(kernel.sharding.device_set),
        "adam_mu_shard_shape": list(
            state_fsdp.opt_state[1][0].mu["hidden"]["kernel"].sharding.shard_shape(kernel.shape)),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
