"""What a compiled CPU program hands to YNNPACK, read from its optimised HLO text."""

import collections
import re

from bench.trace_summary import hlo_computations

_OPERATION = re.compile(r"= \S+ ([a-z][a-z0-9-]*)\(")


def ynnpack_operations(compiled) -> collections.Counter:
    """How many of each HLO operation (`convolution`, `dot`, `reduce`, ...) run inside the YNNPACK
    fusions of a `jax.jit(...).lower(...).compile()` result."""
    bodies = hlo_computations(compiled.as_text())
    operations = collections.Counter()
    for lines in bodies.values():
        for line in lines:
            if '"kind":"__ynn_fusion"' in line:
                called = re.search(r"calls=%([^,\s]+)", line)[1]
                operations.update(op[1] for body_line in bodies[called] if (op := _OPERATION.search(body_line)))
    return operations
