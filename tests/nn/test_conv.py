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


def _ynnpack_calls(compiled) -> int:
    """How many of a compiled CPU program's operations XLA hands to YNNPACK."""
    return compiled.as_text().count('"kind":"__ynn_fusion"')


def test_compiler_options_leave_convolutions_to_xla(monkeypatch):
    """On this CPU, a convolution compiled with `compiler_options()` is XLA's own, not YNNPACK's, and
    gives the same numbers; an XLA that does not know the option compiles with its defaults (None)."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 16, 16, 32), np.float32))
    kernel = jnp.asarray(np.random.default_rng(4).standard_normal((3, 3, 32, 32), np.float32)) * 0.1
    layer = lambda x, kernel: jnp.tanh(lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                                                dimension_numbers=("NHWC", "HWIO", "NHWC")))
    default = jax.jit(layer).lower(x, kernel).compile()
    options = conv_module.compiler_options()
    if options is None:  # an XLA without YNNPACK's option: nothing to turn off
        assert _ynnpack_calls(default) == 0
    else:
        own = jax.jit(layer, compiler_options=options).lower(x, kernel).compile()
        assert _ynnpack_calls(default) > 0 and _ynnpack_calls(own) == 0
        np.testing.assert_allclose(own(x, kernel), default(x, kernel), rtol=1e-5, atol=1e-5)

    monkeypatch.setattr(conv_module, "XLA_OWN_KERNELS", {"xla_no_such_option": ""})
    conv_module.compiler_options.cache_clear()
    try:
        assert conv_module.compiler_options() is None
    finally:
        monkeypatch.undo()
        conv_module.compiler_options.cache_clear()
