"""What a compiled CPU program hands to YNNPACK, read from its optimised HLO text."""

import collections

from bench.trace_summary import CALLS, INSTRUCTION, hlo_computations


def ynnpack_operations(compiled) -> collections.Counter:
    """How many of each HLO operation (`convolution`, `dot`, `reduce`, ...) run inside the YNNPACK
    fusions of a `jax.jit(...).lower(...).compile()` result."""
    bodies = hlo_computations(compiled.as_text())
    operations = collections.Counter()
    for lines in bodies.values():
        for line in lines:
            if '"kind":"__ynn_fusion"' in line:
                called = CALLS.search(line)[1]
                operations.update(op[3] for body_line in bodies[called] if (op := INSTRUCTION.match(body_line)))
    return operations
