"""`bench/trace_summary.py`: a step's traced time by kind of operation, scope and pass. Hand-counted on a
made-up GPU trace (one operation drawn on two lines, a loop around its body, the host's events beside the
device's), and read from a real CPU trace of a Dense layer's gradient."""

import gzip
import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from bench import trace_summary

HLO = """HloModule jit_step, entry_computation_layout={(f32[4,4]{1,0}, f32[4,4]{1,0})->f32[4,4]{1,0}}

%fused_dot (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(step)/transpose(jvp(Decoder))/unet/ResBlock_2/Dense_0/dot_general"}
}

%fused_copy (p0.1: f32[4,4]) -> f32[4,4] {
  %p0.1 = f32[4,4]{1,0} parameter(0)
  %transpose.1 = f32[4,4]{0,1} transpose(%p0.1), dimensions={1,0}, metadata={op_name="jit(step)/jvp(Decoder)/unet/GroupNorm_0/transpose"}
  ROOT %copy.1 = f32[4,4]{1,0} copy(%transpose.1)
}

%body (param: (s32[], f32[4,4])) -> (s32[], f32[4,4]) {
  %param = (s32[], f32[4,4]{1,0}) parameter(0)
  ROOT %tuple.9 = (s32[], f32[4,4]{1,0}) tuple(%param)
}

ENTRY %main (a: f32[4,4], b: f32[4,4]) -> f32[4,4] {
  %a = f32[4,4]{1,0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %fusion.1 = f32[4,4]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_dot
  %fusion.2 = f32[4,4]{1,0} fusion(%fusion.1), kind=kLoop, calls=%fused_copy
  %custom-call.3 = (f32[4,4]{1,0}, u8[0]{0}) custom-call(%a, %b, %b), custom_call_target="__cudnn$fmhaSoftmax", metadata={op_name="jit(step)/jvp(Decoder)/unet/AttentionBlock_0/SelfAttention_0/dot_product_attention"}
  %while.6 = (s32[], f32[4,4]{1,0}) while(%tuple.0), condition=%cond, body=%body
  ROOT %add.7 = f32[4,4]{1,0} add(%fusion.2, %a), metadata={op_name="jit(step)/add"}
}
"""


def _event(pid, tid, op, start_ms, length_ms):
    return {"ph": "X", "pid": pid, "tid": tid, "ts": start_ms * 1e3, "dur": length_ms * 1e3, "name": op,
            "args": {"hlo_op": op, "hlo_module": "jit_step"}}


def _gpu_trace():
    """Two steps on a GPU (milliseconds): the dot 10, the copy 4, cuDNN's attention 20, a CUDA graph 5 (first
    step only), and a loop drawn around all of them; the host's copy of the dot must not count."""
    events = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
              {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
              _event(1, 9, "fusion.1", 0, 500), _event(2, 7, "while.6", 0, 140)]
    for start in (0, 100):
        events += [_event(2, 1, "fusion.1", start, 10), _event(2, 2, "fusion.1", start, 10),  # stream + XLA Ops
                   _event(2, 1, "fusion.2", start + 10, 4), _event(2, 1, "custom-call.3", start + 20, 20)]
    events.append(_event(2, 1, "command_buffer.8", 50, 5))
    return events


def test_a_gpu_trace_counted_by_hand():
    summary = trace_summary.summarise(_gpu_trace(), HLO, steps=2)
    assert summary["ms_per_step_by_kind"] == {"attention": 20.0, "matmul": 10.0, "data_movement": 4.0,
                                              "command_buffer": 2.5}
    assert summary["traced_ms_per_step"] == 36.5
    assert summary["busy_share_of_window"] == round(73 / 140, 4)  # the loop's span is its body's, not its own
    assert summary["ms_per_step_by_layer"] == {"SelfAttention": 20.0, "Dense": 10.0, "GroupNorm": 4.0,
                                               "(no op_name)": 2.5}
    assert summary["ms_per_step_by_pass"] == {"forward": 24.0, "backward": 10.0, "other": 2.5}
    assert summary["unmatched_operations"] == ["command_buffer.8"]
    assert [(op["op"], op["kind"], op["shape"]) for op in summary["top_operations"][:2]] == [
        ("custom-call.3", "attention", "(f32[4,4]{1,0}, u8[0]{0})"), ("fusion.1", "matmul", "f32[4,4]{1,0}")]


def test_the_instructions_read_through_their_fused_computations():
    module = trace_summary.instructions(HLO)
    assert {name: i.kind for name, i in module.items() if name in ("fusion.1", "fusion.2", "while.6", "add.7")} == {
        "fusion.1": "matmul", "fusion.2": "data_movement", "while.6": "control", "add.7": "elementwise"}
    assert trace_summary.layer_of(module["fusion.2"].op_name) == "GroupNorm"
    assert trace_summary.layer_of("jit(step)/jvp(Decoder)/concatenate") == "Decoder"
    assert trace_summary.layer_of("jit(step)/jvp(Decoder)/unet/concatenate") == "unet"
    assert trace_summary.layer_of("jit(step)/transpose(jvp(DalleTransformer))/while/body/closed_call/blocks.step/"
                                  "blocks/attention/bqhd,bkhd->bhqk/dot_general") == "attention"
    assert trace_summary.layer_of(module["add.7"].op_name) == "(outside the model)"
    assert trace_summary.pass_of(module["fusion.1"].op_name) == "backward"


def test_a_trace_without_operations_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="no executed HLO operation"):
        trace_summary.summarise([{"ph": "X", "pid": 1, "ts": 0, "dur": 5, "name": "python"}], HLO, steps=1)
    with pytest.raises(FileNotFoundError, match="perfetto_trace.json.gz"):
        trace_summary.read_trace(tmp_path)


class _TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(8)(jnp.tanh(nn.Dense(64)(x)))


def test_a_real_cpu_trace_of_a_dense_layers_gradient(tmp_path):
    model = _TwoLayers()
    x = jnp.ones((32, 48))
    params = model.init(jax.random.key(0), x)
    step = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply(p, x) ** 2)))
    compiled = step.lower(params, x).compile()
    jax.block_until_ready(compiled(params, x))
    with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
        for _ in range(2):
            grads = compiled(params, x)
        jax.block_until_ready(grads)
    chex.assert_trees_all_equal_shapes(grads, params)
    events = trace_summary.read_trace(tmp_path)
    summary = trace_summary.summarise(events, compiled.as_text(), steps=2)
    assert summary["unmatched_operations"] == []
    assert "matmul" in summary["ms_per_step_by_kind"]
    assert "Dense" in summary["ms_per_step_by_layer"]
    assert {"forward", "backward"} <= set(summary["ms_per_step_by_pass"])
    for table in ("ms_per_step_by_kind", "ms_per_step_by_layer", "ms_per_step_by_pass"):
        assert sum(summary[table].values()) == pytest.approx(summary["traced_ms_per_step"], abs=1e-2)
    # what the trace file holds is what `read_trace` returned
    with gzip.open(next(tmp_path.rglob("perfetto_trace.json.gz")), "rt") as stream:
        assert len(json.load(stream)["traceEvents"]) == len(events)
