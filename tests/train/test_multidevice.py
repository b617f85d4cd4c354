"""The sharded path on 8 fake CPU devices, in a subprocess (XLA reads the flag at start-up)."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO


def test_eight_devices_match_one_and_fsdp_shards_parameters(tiny_data_dir, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(REPO / "tests/train/multidevice_check.py"), str(REPO / "configs/shapes_toy.py:tiny"),
         str(tiny_data_dir), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["num_devices"] == 8
    np.testing.assert_allclose(report["losses_eight_devices"], report["losses_one_device"], rtol=0, atol=1e-5)
    assert report["max_param_diff"] < 1e-5
    # `embed -> fsdp`: the hidden kernel [embed=32, mlp=64] is cut in 8 along embed, on 8 devices.
    assert report["hidden_kernel_shape"] == [32, 64]
    assert report["hidden_kernel_shard_shape"] == [4, 64]
    assert report["hidden_kernel_devices"] == 8
    assert report["adam_mu_shard_shape"] == [4, 64]  # optimizer state follows its parameter
