"""Reading a checkpoint's tensors one at a time, and filling a parameter tree from them."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from dalle_jax.weights.karlo import fuse_attention_projections
from dalle_jax.weights.mapping import Tensors, WeightsMismatchError, dense_kernel, fill, read_safetensors


def counted(arrays):
    """`Tensors` of `arrays` and the number of times each has been read."""
    reads = dict.fromkeys(arrays, 0)

    def reader(name):
        def read():
            reads[name] += 1
            return arrays[name]
        return read

    return Tensors({name: reader(name) for name in arrays}), reads


def test_safetensors_are_read_when_looked_up_and_equal_what_was_saved(tmp_path):
    saved = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5, -2.0], np.float16)}
    save_file(saved, str(tmp_path / "model.safetensors"))
    path, tensors = read_safetensors(tmp_path, ("missing.safetensors", "model.safetensors"))
    assert path == tmp_path / "model.safetensors"
    assert sorted(tensors) == ["b", "w"] and len(tensors) == 2 and "w" in tensors and "x" not in tensors
    for name, array in saved.items():
        np.testing.assert_array_equal(tensors[name], array)
        assert tensors[name].dtype == array.dtype
    assert sorted(tensors.prefixed("decoder.")) == ["decoder.b", "decoder.w"]


def test_unreadable_files_and_tensors_are_named_and_bfloat16_is_read(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model.safetensors not found \(.* has no files\)"):
        read_safetensors(tmp_path, ("model.safetensors",))
    save_file({"half": np.array([0.0, 1.0], jnp.bfloat16), "full": np.array([2.0], np.float32)},
              str(tmp_path / "model.safetensors"))
    path, tensors = read_safetensors(tmp_path, ("model.safetensors",))
    assert tensors["half"].dtype == jnp.bfloat16  # NumPy reads it as ml_dtypes' bfloat16, which JAX loads
    np.testing.assert_array_equal(tensors["half"].astype(np.float32), [0.0, 1.0])
    path.write_bytes(path.read_bytes()[:-2])  # truncated after its names were listed
    with pytest.raises(ValueError, match=f"cannot read full from {path}: .*incomplete"):
        tensors["full"]
    with pytest.raises(ValueError, match=f"cannot read {path}: .*incomplete"):
        read_safetensors(tmp_path, ("model.safetensors",))


def test_fill_reads_each_tensor_once_and_converts_it_to_the_dtype():
    rng = np.random.default_rng(0)
    arrays = {"dense.weight": rng.normal(size=(3, 2)).astype(np.float32), "dense.bias": np.ones(3, np.float32),
              "position_ids": np.arange(4)}
    abstract = {"Dense": {"kernel": jax.ShapeDtypeStruct((2, 3), jnp.float32),
                          "bias": jax.ShapeDtypeStruct((3,), jnp.float32)}}
    rule = lambda path: {"kernel": ("dense.weight", dense_kernel), "bias": ("dense.bias", lambda w, s: w)}[path[-1]]
    tensors, reads = counted(arrays)
    params = fill(abstract, tensors, rule, origin="model.safetensors", ignored=("position_ids",), dtype=jnp.bfloat16)
    assert reads == {"dense.weight": 1, "dense.bias": 1, "position_ids": 0}  # contains and iteration read nothing
    chex.assert_trees_all_equal_shapes_and_dtypes(params, jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, jnp.bfloat16), abstract))
    np.testing.assert_array_equal(np.asarray(params["Dense"]["kernel"], np.float32),
                                  np.asarray(jnp.asarray(arrays["dense.weight"].T, jnp.bfloat16), np.float32))
    with pytest.raises(WeightsMismatchError, match="position_ids: shape \\(4,\\), not part of the architecture"):
        fill(abstract, tensors, rule, origin="model.safetensors")


def test_attention_projections_are_joined_when_read():
    rng = np.random.default_rng(1)
    parts = ("to_q", "to_k", "to_v", "add_k_proj", "add_v_proj")
    arrays = {f"attn.{part}.{leaf}": rng.normal(size=(4, 4) if leaf == "weight" else (4,)).astype(np.float32)
              for part in parts for leaf in ("weight", "bias")} | {"norm.weight": np.ones(4, np.float32)}
    tensors, reads = counted(arrays)
    fused = fuse_attention_projections(tensors, ["attn"])
    assert sorted(fused) == ["attn.context_kv.bias", "attn.context_kv.weight", "attn.qkv.bias", "attn.qkv.weight",
                             "norm.weight"]
    assert not any(reads.values())
    np.testing.assert_array_equal(fused["attn.qkv.weight"],
                                  np.concatenate([arrays[f"attn.{p}.weight"] for p in ("to_q", "to_k", "to_v")]))
    np.testing.assert_array_equal(fused["attn.context_kv.bias"],
                                  np.concatenate([arrays[f"attn.{p}.bias"] for p in ("add_k_proj", "add_v_proj")]))
