"""Meshes and shardings: logical axis names in the model, mesh axes in the config.

Parameters are created with `nn.with_logical_partitioning(init, ("embed", "mlp"))`;
the config's rule table (`config.sharding.rules`) maps each logical name to mesh axes of
the mesh `(data, fsdp, tensor)`. Nothing else in the code names a mesh axis.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.experimental import multihost_utils

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")
BATCH_AXES: tuple[str, ...] = ("data", "fsdp")  # the mesh axes a batch is split over

LogicalRules = Sequence[tuple[str, Any]]


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A `(data, fsdp, tensor)` mesh; one axis given as -1 takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = [int(mesh_config[axis]) for axis in MESH_AXES]
    if shape.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, shape))}")
    if -1 in shape:
        fixed = math.prod(s for s in shape if s != -1)
        if len(devices) % fixed:
            raise ValueError(f"{len(devices)} devices cannot fill mesh {dict(zip(MESH_AXES, shape))}")
        shape[shape.index(-1)] = len(devices) // fixed
    if math.prod(shape) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                         f"found {len(devices)}")
    # Auto axes: GSPMD propagates shardings from the in/out shardings and the
    # logical constraints, as Flax Linen's partitioning expects.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def rules_from_config(rules) -> tuple[tuple[str, Any], ...]:
    """The rule table as hashable tuples (`("batch", ("data", "fsdp"))`, `("kv", None)`)."""
    table = []
    for logical, mesh_axes in rules:
        if isinstance(mesh_axes, list):
            mesh_axes = tuple(mesh_axes)
        for axis in (mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)):
            if axis is not None and axis not in MESH_AXES:
                raise ValueError(f"sharding rule for {logical!r} names mesh axis {axis!r}; "
                                 f"valid axes are {MESH_AXES}")
        table.append((logical, mesh_axes))
    return tuple(table)


def logical_shardings(abstract_tree: Any, mesh: jax.sharding.Mesh, rules: LogicalRules) -> Any:
    """`NamedSharding`s for a tree whose leaves may be `nn.LogicallyPartitioned` boxes.

    The result has the tree's structure with the boxes removed; unannotated leaves are
    replicated, and so is each dimension that its mesh axes do not divide (`divisible`).
    """
    specs = nn.get_partition_spec(abstract_tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    return jax.tree.map(lambda sharding, leaf: divisible(sharding, leaf.shape), shardings, nn.unbox(abstract_tree))


def divisible(sharding: jax.sharding.NamedSharding, shape: Sequence[int]) -> jax.sharding.NamedSharding:
    """`sharding` with each dimension that its mesh axes do not divide kept whole: the three
    output channels of an image on `tensor=2`, a vocabulary of 37 on `fsdp=4`."""
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    for dim, (size, axes) in enumerate(zip(shape, spec)):
        if axes is not None and size % math.prod(sharding.mesh.shape[a] for a in _axis_names(axes)):
            spec[dim] = None
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))


def _axis_names(axes) -> tuple[str, ...]:
    return tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Leading (batch) dimension split over the data-parallel axes, the rest whole."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_AXES))



def host_local(tree: Any) -> Any:
    """`tree`'s arrays whole on this host, for work each process does on its own (its chunks of
    a cache): a computation on an array that spans several processes needs all of them. Every
    process must call it (it gathers); with one process it returns `tree` as it is."""
    if jax.process_count() == 1:
        return tree
    return multihost_utils.process_allgather(tree, tiled=True)
