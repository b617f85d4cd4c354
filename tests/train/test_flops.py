import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from dalle_jax.models.dalle import DalleTransformer, teacher_forced_logits
from dalle_jax.nn import masks
from dalle_jax.train import flops


def test_products_convolutions_and_loops_are_counted_by_hand():
    x, w = jnp.ones((4, 6)), jnp.ones((6, 5))
    assert flops.matmul_flops(jax.make_jaxpr(jnp.matmul)(x, w)) == 2 * 4 * 6 * 5
    images, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 7))
    conv = lambda a, k: jax.lax.conv_general_dilated(a, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert flops.matmul_flops(jax.make_jaxpr(conv)(images, kernel)) == 2 * (2 * 4 * 4 * 7) * (3 * 3 * 3)
    looped = lambda a, b: jax.lax.scan(lambda c, _: (c @ b, None), a, length=5)[0]
    square = jnp.ones((6, 6))
    assert flops.matmul_flops(jax.make_jaxpr(jax.jit(looped))(square, square)) == 5 * 2 * 6 ** 3
    assert flops.training_flops(lambda a, b: jnp.sum(a @ b), x, w) == 3 * 2 * 4 * 6 * 5


@pytest.mark.parametrize("scan_layers", [False, True])
def test_a_transformer_counts_as_the_textbook_formula(scan_layers):
    """Per sequence: every position through each layer's projections and MLP, dense attention over
    the whole sequence (the masks are applied to computed logits), and the two output heads."""
    depth, embed, heads, head_dim, mlp, text_length, grid, vocab = 3, 32, 2, 16, 64, 6, (3, 4), (20, 16)
    model = DalleTransformer(text_vocab_size=vocab[0], image_vocab_size=vocab[1], text_length=text_length,
                             grid_size=grid, embed_dim=embed, depth=depth, num_heads=heads, head_dim=head_dim,
                             mlp_dim=mlp, attention_kinds=masks.layer_kinds("sparse", depth), conv_kernel=3,
                             scan_layers=scan_layers)
    batch, length = 2, text_length + grid[0] * grid[1]
    tokens = jnp.zeros((batch, length), jnp.int32)
    params = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), tokens[:, :-1]))["params"])
    counted = flops.matmul_flops(jax.make_jaxpr(lambda p, t: teacher_forced_logits(model, p, t))(params, tokens))
    positions = length - 1
    per_layer = positions * 2 * (4 * embed * heads * head_dim + 2 * embed * mlp) + 2 * 2 * positions ** 2 * heads * head_dim
    heads_flops = 2 * embed * ((text_length - 1) * vocab[0] + grid[0] * grid[1] * vocab[1])
    assert counted == batch * (depth * per_layer + heads_flops)


def test_peaks_by_device_kind():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3") == flops.peak_flops("NVIDIA H200") == 989.4e12
    assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert flops.peak_flops("TPU v5 lite") == 197e12 and flops.peak_flops("TPU v5") == 459e12
    assert flops.peak_flops("cpu") is None
