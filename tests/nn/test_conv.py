"""`conv`: XLA's convolution forward, and a kernel gradient by taps that equals XLA's."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dalle_jax.nn.conv import conv, kernel_grad_by_taps
from dalle_jax.train import flops

NHWC = ("NHWC", "HWIO", "NHWC")


def _xla_grads(x, kernel, strides, padding, dy):
    plain = lambda x, kernel: lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)
    return jax.vjp(plain, x, kernel)[1](dy)


@pytest.mark.parametrize("kernel_size, strides, padding, channels", [
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (5, 7)),
    ((1, 1), (1, 1), ((0, 0), (0, 0)), (6, 4)),
    ((4, 4), (2, 2), ((1, 2), (1, 2)), (3, 5)),  # the tokenizers' downsampling, SAME at stride 2
    ((3, 2), (2, 1), ((0, 0), (1, 0)), (2, 3)),  # uneven, unpadded rows
])
def test_kernel_grad_by_taps_equals_xla(kernel_size, strides, padding, channels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 8, channels[0]), np.float32)
    kernel = rng.standard_normal((*kernel_size, *channels), np.float32)
    y = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)
    dy = rng.standard_normal(y.shape, np.float32)
    by_taps = kernel_grad_by_taps(jnp.asarray(x), jnp.asarray(dy), kernel_size, strides, padding)
    chex.assert_shape(by_taps, kernel.shape)
    np.testing.assert_allclose(by_taps, _xla_grads(x, kernel, strides, padding, dy)[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("features, kernel, stride", [(64, 3, 1), (64, 1, 1), (8, 3, 2)])
def test_conv_output_and_gradients_are_xlas(features, kernel, stride):
    """Through `nn.Conv`: the forward pass is XLA's, and both gradients equal XLA's, whether
    the kernel's is taken by taps (1×1, or 64 outputs) or by XLA (8 outputs)."""
    layer = conv(features, kernel=kernel, stride=stride)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 6), np.float32))
    params = nn.meta.unbox(layer.init(jax.random.key(0), x)["params"])
    out = layer.apply({"params": params}, x)
    padding = lax.padtype_to_pads((8, 8), (kernel, kernel), (stride, stride), "SAME")
    expected = lax.conv_general_dilated(x, params["kernel"], (stride, stride), padding,
                                        dimension_numbers=NHWC) + params["bias"]
    chex.assert_shape(out, (2, 8 // stride, 8 // stride, features))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    weights = jnp.asarray(np.random.default_rng(2).standard_normal(out.shape, np.float32))
    loss = lambda params, x: jnp.sum(weights * layer.apply({"params": params}, x))
    grads, dx = jax.grad(loss, argnums=(0, 1))(params, x)
    xla_dx, xla_dkernel = _xla_grads(x, params["kernel"], (stride, stride), padding, weights)
    np.testing.assert_allclose(grads["kernel"], xla_dkernel, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, xla_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["bias"], weights.sum((0, 1, 2)), rtol=1e-4)


def _dot_products(jaxpr) -> int:
    """`dot_general`s in a jaxpr and every jaxpr inside it (the branches of `platform_dependent`)."""
    return sum((eqn.primitive.name == "dot_general") + sum(map(_dot_products, flops.sub_jaxprs(eqn.params)))
               for eqn in jaxpr.eqns)


def test_switch_leaves_the_kernel_gradient_to_xla(monkeypatch):
    """`KERNEL_GRAD_BY_TAPS_ON_CPU = False` (bench/conv_cpu.py --step) traces no per-tap products."""
    from dalle_jax.nn import conv as conv_module

    layer = conv(64, kernel=3)
    x = jnp.ones((1, 4, 4, 8))
    params = nn.meta.unbox(layer.init(jax.random.key(0), x)["params"])
    kernel_grad = lambda: jax.make_jaxpr(jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x))))(params).jaxpr
    assert _dot_products(kernel_grad()) == 9  # one product a tap of the 3×3 kernel
    monkeypatch.setattr(conv_module, "KERNEL_GRAD_BY_TAPS_ON_CPU", False)
    assert _dot_products(kernel_grad()) == 0
