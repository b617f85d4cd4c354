"""Where a compiled step's time goes, from a `jax.profiler` trace and the step's optimised HLO.

  python bench/trace_summary.py TRACE_DIR HLO_TXT --steps 3     # JSON to stdout

`bench/scale.py --profile DIR` calls `summarise` on each run and puts the result in the run's JSON line.
The trace is the one `jax.profiler.trace(..., create_perfetto_trace=True)` writes. Each executed
operation in it names the HLO instruction it ran (`args.hlo_op`): kernels on a GPU's streams, thunks on the
CPU's threads. From the HLO text come the instruction's kind (what its fused computation holds: a `dot`, a
`convolution`, a `reduce`; its custom-call target: cuBLAS, cuDNN's convolutions and fused attention; a
collective; data movement), the scope it ran in (a Flax module or attribute: `Conv`, `GroupNorm`,
`attention`, from JAX's `op_name`) and its pass (forward, or backward where autodiff transposed it). An
instruction's time is the union of its intervals, so one drawn on two lines (a GPU's stream and its
`XLA Ops` line) counts once.

On a GPU the summary is the device's time. On the CPU, XLA runs convolutions on Eigen's threads outside the
traced thunks, so they appear far shorter than they are: read `traced_ms_per_step` against the step.
Operations inside a CUDA graph appear as one `command_buffer`; profile with
`XLA_FLAGS=--xla_gpu_enable_command_buffer=` to see into them.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
from typing import NamedTuple

_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) .*\{$")
# name, shape (a tuple's has spaces), opcode
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][a-z0-9-]*)\(")
CALLS = re.compile(r"calls=%([^,\s}]+)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_SCOPE = re.compile(r"^[A-Za-z_]\w*$")  # a Flax module's or attribute's scope: Conv_0, attention, image_head
_JAX_SCOPES = {"jit", "while", "body", "cond", "closed_call", "checkpoint", "remat", "rematted_computation", "pjit",
               "custom_jvp_call", "custom_vjp_call", "shard_map"}
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_CONTROL = {"while", "conditional", "call"}  # their time is their bodies' operations', traced on their own
_PLUMBING = {"fusion", "parameter", "constant", "tuple", "get-tuple-element", "bitcast"}  # wrappers, no work
_MOVEMENT = _PLUMBING | {"copy", "transpose", "reverse", "slice", "dynamic-slice", "dynamic-update-slice", "pad",
                         "concatenate", "broadcast", "reshape"}
KINDS = ("attention", "matmul", "convolution", "collective", "reduction", "data_movement", "elementwise",
         "command_buffer", "other")


class Instruction(NamedTuple):
    kind: str  # one of KINDS, or "control" (a loop or call: its time is its body's)
    shape: str
    op_name: str  # JAX's name of what it computes: "jit(step)/transpose(jvp(Decoder))/unet/ResBlock_2/Conv_0/..."


def hlo_computations(hlo_text: str) -> dict[str, list[str]]:
    """The optimised HLO module's computations: name to its instruction lines."""
    bodies, name = {}, None
    for line in hlo_text.splitlines():
        if header := _COMPUTATION.match(line):
            name, bodies[header[1]] = header[1], []
        elif line == "}":
            name = None
        elif name is not None:
            bodies[name].append(line)
    return bodies


def _kind_of_target(target: str) -> str | None:
    target = target.lower()
    for kind, words in (("attention", ("fmha", "flash", "attention")), ("matmul", ("gemm", "matmul", "cublas")),
                        ("convolution", ("conv",)), ("collective", ("nccl", "collective"))):
        if any(word in target for word in words):
            return kind
    return None


def _kind(opcodes: set[str], targets: set[str]) -> str:
    """An instruction's kind from the opcodes and custom-call targets it runs, its called computations'
    included; the most telling first (a fusion holding a `dot` is a matrix product whatever else it holds)."""
    for target in targets:
        if kind := _kind_of_target(target):
            return kind
    if "dot" in opcodes:
        return "matmul"
    if "convolution" in opcodes:
        return "convolution"
    if any(op.startswith(_COLLECTIVES) for op in opcodes):
        return "collective"
    if opcodes & {"reduce", "reduce-window"}:
        return "reduction"
    if opcodes <= _MOVEMENT and opcodes - _PLUMBING:
        return "data_movement"
    return "elementwise" if opcodes - _PLUMBING else "other"


def instructions(hlo_text: str) -> dict[str, Instruction]:
    """Every instruction of the module by name, its called computations (a fusion's body) read through."""
    parsed = {name: [(m, line) for line in lines if (m := INSTRUCTION.match(line))]
              for name, lines in hlo_computations(hlo_text).items()}

    def read(lines, seen: set[str]) -> tuple[set[str], set[str], list[str]]:
        """Opcodes, custom-call targets and op names (the root's first) of these lines and what they call."""
        opcodes, targets, names = set(), set(), []
        for match, line in sorted(lines, key=lambda item: "ROOT " not in item[1]):
            opcodes.add(match[3])
            targets.update(_TARGET.findall(line))
            names += _OP_NAME.findall(line)
            for called in CALLS.findall(line):
                if called in parsed and called not in seen:
                    seen.add(called)
                    more = read(parsed[called], seen)
                    opcodes, targets, names = opcodes | more[0], targets | more[1], names + more[2]
        return opcodes, targets, names

    result = {}
    for lines in parsed.values():
        for match, line in lines:
            opcodes, targets, names = read([(match, line)], set())
            kind = "control" if match[3] in _CONTROL else _kind(opcodes, targets)
            result[match[1]] = Instruction(kind, match[2], names[0] if names else "")
    return result


def layer_of(op_name: str) -> str:
    """The innermost named scope an operation ran in, without a Flax index (`.../ResBlock_2/Conv_0/conv...` is
    `Conv`, `.../blocks/attention/bqhd,bkhd->bhqk/dot_general` is `attention`); the model's class for its
    top-level operations (`jvp(Decoder)/add` is `Decoder`); `(outside the model)` for the optimizer's update
    and the loss around the model; `(no op_name)` for what XLA added itself (layout copies)."""
    scopes = [part for part in op_name.split("/")[1:-1] if _SCOPE.match(part) and part not in _JAX_SCOPES]
    if scopes:
        return re.sub(r"_\d+$", "", scopes[-1])
    if model := re.search(r"jvp\(([A-Za-z_]\w*)", op_name):
        return model[1]
    return "(outside the model)" if op_name else "(no op_name)"


def pass_of(op_name: str) -> str:
    """`backward` where autodiff transposed the operation, `forward` for the rest of the model's pass, else `other`."""
    if "transpose(" in op_name:
        return "backward"
    return "forward" if "jvp(" in op_name else "other"


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def executed_operations(events: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """The executed HLO instructions' intervals (microseconds): on the accelerator's processes where the trace
    has any (`/device:GPU:0`, `/device:TPU:0`), else on the host's."""
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    devices = {pid for pid, name in names.items() if re.search(r"/device:(GPU|TPU):\d+", name)}
    intervals = collections.defaultdict(list)
    for e in events:
        op = e.get("args", {}).get("hlo_op")
        if e.get("ph") == "X" and op and (not devices or e.get("pid") in devices):
            intervals[op].append((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))))
    return intervals


def summarise(events: list[dict], hlo_text: str, steps: int, top: int = 12) -> dict:
    """Milliseconds a step by kind of operation, by scope (`layer_of`) and by pass, the busiest instructions, and
    the share of the traced window in which some operation ran. `events`: the trace's event list; `steps`:
    how many steps the trace holds."""
    module = instructions(hlo_text)
    unknown = Instruction("other", "", "")

    def instruction(op: str) -> Instruction:
        if op.startswith("command_buffer") and op not in module:
            return Instruction("command_buffer", "", "")
        return module.get(op, unknown)

    intervals = {op: spans for op, spans in executed_operations(events).items() if instruction(op).kind != "control"}
    if not intervals:
        raise ValueError("the trace holds no executed HLO operation (no event with args.hlo_op)")
    per_op = {op: _union_length(spans) / 1e3 / steps for op, spans in intervals.items()}
    by_kind, by_layer, by_pass = collections.Counter(), collections.Counter(), collections.Counter()
    for op, ms in per_op.items():
        by_kind[instruction(op).kind] += ms
        by_layer[layer_of(instruction(op).op_name)] += ms
        by_pass[pass_of(instruction(op).op_name)] += ms
    spans = [span for spans in intervals.values() for span in spans]
    window = max(stop for _, stop in spans) - min(start for start, _ in spans)
    traced = sum(per_op.values())
    return {
        "traced_ms_per_step": round(traced, 3),
        "busy_share_of_window": round(_union_length(spans) / window, 4) if window else None,
        "ms_per_step_by_kind": {kind: round(by_kind[kind], 3) for kind in KINDS if by_kind[kind]},
        "share_by_kind": {kind: round(by_kind[kind] / traced, 4) for kind in KINDS if by_kind[kind]},
        "ms_per_step_by_layer": {layer: round(ms, 3) for layer, ms in by_layer.most_common()},
        "ms_per_step_by_pass": {name: round(ms, 3) for name, ms in by_pass.most_common()},
        "unmatched_operations": sorted(op for op in per_op if op not in module)[:10],
        "top_operations": [{"op": op, "kind": instruction(op).kind, "layer": layer_of(instruction(op).op_name),
                            "shape": instruction(op).shape, "ms_per_step": round(ms, 3)}
                           for op, ms in sorted(per_op.items(), key=lambda item: -item[1])[:top]],
    }


def read_trace(directory: str | pathlib.Path) -> list[dict]:
    """The event list of the newest `perfetto_trace.json.gz` under `directory`."""
    paths = sorted(pathlib.Path(directory).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {directory} "
                                "(jax.profiler.trace(..., create_perfetto_trace=True) writes one)")
    with gzip.open(paths[-1], "rt") as stream:
        trace = json.load(stream)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace_dir")
    parser.add_argument("hlo", help="the step's optimised HLO text (`compiled.as_text()`)")
    parser.add_argument("--steps", type=int, required=True, help="how many steps the trace holds")
    args = parser.parse_args()
    summary = summarise(read_trace(args.trace_dir), pathlib.Path(args.hlo).read_text(), args.steps)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
