from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

from dalle_jax.train.partitioning import divisible


def test_a_dimension_its_mesh_axes_do_not_divide_is_kept_whole():
    mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
    sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), "tensor"))
    assert divisible(sharding, (8, 6)).spec == PartitionSpec(("data", "fsdp"), "tensor")  # both divide
    assert divisible(sharding, (8, 3)).spec == PartitionSpec(("data", "fsdp"), None)  # RGB on tensor=2
    assert divisible(sharding, (6, 4)).spec == PartitionSpec(None, "tensor")  # 6 over data × fsdp = 4
    assert divisible(sharding, (4, 4, 5)).spec == PartitionSpec(("data", "fsdp"), "tensor", None)
