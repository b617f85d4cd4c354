"""Every task on 8 fake CPU devices (`data=2, fsdp=2, tensor=2`, the default rules) against one
device, in a subprocess (XLA reads the device count at start-up)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

TASKS = {"dalle": ("image_tokenizer", "dalle", "captioner"),
         "unclip": ("clip", "prior_diffusion", "prior_autoregressive", "decoder", "upsampler")}


@pytest.mark.scale
@pytest.mark.parametrize("group", sorted(TASKS))
def test_every_task_on_eight_devices_matches_one_and_splits_its_kernels(group, tiny_data_dir, tmp_path):
    flags = os.environ.get("XLA_FLAGS", "")  # keeps the suite's -O0
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(REPO / "tests/train/sharded_tasks_check.py"), group, str(tiny_data_dir), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["num_devices"] == 8
    assert sorted(report["tasks"]) == sorted(TASKS[group])
    for name, task in report["tasks"].items():
        assert len(task["losses_one_device"]) == 3, name
        np.testing.assert_allclose(task["losses_eight_devices"], task["losses_one_device"], rtol=0, atol=1e-5,
                                   err_msg=name)
        # fsdp × tensor = 4: whole parameters would put 100% on each device; every kernel split, 25%.
        assert task["param_bytes_device_0"] < 0.35 * task["param_bytes"], name
        assert task["opt_state_bytes_device_0"] < 0.35 * task["opt_state_bytes"], name  # Adam follows its parameter
        for kernel in task["largest_kernels"]:
            assert np.prod(kernel["shard_shape"]) <= np.prod(kernel["shape"]) // 2, (name, kernel)
