"""Model FLOPs and the chips' peaks: what `perf/mfu` is made of.

A model's FLOPs are counted from its own program, not from a formula kept beside it: the
matrix products (`dot_general`) and convolutions of the loss's forward pass as JAX traces it,
`2 · multiply-adds` each (a scan's body counted once per iteration), times 3 for training (the
backward pass costs about two forward passes: Kaplan et al. 2020, section 2.1). Elementwise work,
recomputation under `model.remat` and the optimizer are not model FLOPs, as in PaLM's MFU
(Chowdhery et al. 2022, appendix B). Masked attention counts every logit XLA computes (DALL·E's
row and column layers run densely, masked).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from jax.extend import core as jax_core

# Dense bfloat16 peak FLOP/s of one device, by a substring of `device.device_kind` (the first that
# matches). Vendors' datasheets: NVIDIA H100/H200 SXM 989.4 TFLOP/s (the H100 PCIe 756), A100 312;
# Google Cloud TPU v4 275, v5e 197, v5p 459, v6e 918.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12), ("H100", 989.4e12), ("H200", 989.4e12), ("A100", 312e12),
    ("TPU v6 lite", 918e12), ("TPU v5 lite", 197e12), ("TPU v5", 459e12), ("TPU v4", 275e12),
)


def peak_flops(device_kind: str) -> float | None:
    """The dense bfloat16 peak of one device of this kind, or None if it is not in `PEAK_FLOPS`."""
    return next((peak for name, peak in PEAK_FLOPS if name in device_kind), None)


def sub_jaxprs(params: dict):
    """The jaxprs an equation holds in its `params` (a scan's body, a cond's branches, ...)."""
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax_core.Jaxpr):
                yield item


def matmul_flops(jaxpr) -> int:
    """FLOPs of the matrix products and convolutions of a (closed) jaxpr, `2 · multiply-adds`;
    a scan's body counts `length` times, a `cond` its costliest branch, a `while` loop's body once."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
        elif name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) // out_features
        else:
            inner = [matmul_flops(sub) for sub in sub_jaxprs(eqn.params)]
            if not inner:
                continue
            if name == "scan":
                total += eqn.params["length"] * sum(inner)
            elif name == "cond":
                total += max(inner)
            else:
                total += sum(inner)
    return total


def training_flops(loss: Callable[..., Any], *args) -> int:
    """Model FLOPs of one training step of `loss(*args)` (arrays or `jax.ShapeDtypeStruct`s):
    3 × its forward pass's `matmul_flops`."""
    return 3 * matmul_flops(jax.make_jaxpr(loss)(*args))


def step_flops(task, abstract_state, example: dict, batch_size: int, mesh: jax.sharding.Mesh, rules) -> int:
    """Model FLOPs of one training step of a trainer task (its `loss_fn`) on a global batch of `batch_size`
    examples like `example`, from the abstract train state, traced under the mesh and rules the step runs with."""
    batch = {k: jax.ShapeDtypeStruct((batch_size, *np.shape(v)), np.asarray(v).dtype) for k, v in example.items()}
    loss = lambda params, batch, rng, step, model_state: task.loss_fn(params, batch, rng, step=step,
                                                                      model_state=model_state)
    with nn.logical_axis_rules(rules), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return training_flops(loss, abstract_state.params, batch, abstract_state.rng, abstract_state.step,
                              abstract_state.model_state)
