"""`conv`: an NHWC convolution with SAME padding and the kernel's logical axes; `compiler_options`."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dalle_jax.nn import conv as conv_module
from dalle_jax.nn.conv import conv
from tests.hlo import ynnpack_operations


@pytest.mark.parametrize("features, kernel, stride", [(64, 3, 1), (64, 1, 1), (8, 4, 2)])
def test_conv_is_xlas_same_padded_convolution(features, kernel, stride):
    """The output is `lax.conv_general_dilated` with SAME padding plus the bias; 4×4 at stride 2
    (the tokenizers' downsampling) pads one row and column more after than before."""
    layer = conv(features, kernel=kernel, stride=stride)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 6), np.float32))
    boxed = layer.init(jax.random.key(0), x)["params"]
    assert boxed["kernel"].names == ("height", "width", "channels_in", "channels")
    params = nn.meta.unbox(boxed)
    padding = lax.padtype_to_pads((8, 8), (kernel, kernel), (stride, stride), "SAME")
    expected = lax.conv_general_dilated(x, params["kernel"], (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["bias"]
    out = layer.apply({"params": params}, x)
    chex.assert_shape(out, (2, 8 // stride, 8 // stride, features))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_compiler_options_leave_convolutions_to_xla(monkeypatch):
    """On this CPU, a convolution and its gradients compiled with `compiler_options()` are XLA's own
    while YNNPACK takes the channel sums, with the same numbers as XLA's defaults (which hand YNNPACK
    the convolutions too); an XLA that does not know the option compiles with its defaults (None)."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 16, 16, 32), np.float32))
    kernel = jnp.asarray(np.random.default_rng(4).standard_normal((3, 3, 32, 32), np.float32)) * 0.1

    def loss(x, kernel):
        y = lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(y - y.mean(axis=(1, 2), keepdims=True)).sum()

    grads = jax.grad(loss, argnums=(0, 1))
    default = jax.jit(grads).lower(x, kernel).compile()
    options = conv_module.compiler_options()
    if options is None:  # an XLA without YNNPACK's option: nothing to choose
        assert not ynnpack_operations(default)
    else:
        ours = jax.jit(grads, compiler_options=options).lower(x, kernel).compile()
        assert ynnpack_operations(default)["convolution"] == 3  # the forward pass and both gradients
        assert ynnpack_operations(ours)["convolution"] == 0 and ynnpack_operations(ours)["reduce"] > 0
        chex.assert_trees_all_close(ours(x, kernel), default(x, kernel), rtol=1e-5, atol=1e-4)

    monkeypatch.setattr(conv_module, "YNNPACK_REDUCTIONS_ONLY", {"xla_no_such_option": ""})
    conv_module.compiler_options.cache_clear()
    try:
        assert conv_module.compiler_options() is None
    finally:
        monkeypatch.undo()
        conv_module.compiler_options.cache_clear()
