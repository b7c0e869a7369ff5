"""A property as VNN-LIB 1, the format the verifiers of the field read (``patchlang export --format vnnlib``).

VNN-LIB asserts the *unsafe* region, so a property block's ``ensure`` CNF is negated into the same normal form
the verifier uses (:func:`~patchlang.tasks.verify.property_cases`: one input box per case with an OR of
conjunctions of linear output rows) and written with :func:`~patchlang.inputs.vnnlib.write_vnnlib`.  VNN-LIB has
no strict comparisons that tools honour, so strict rows are written non-strict: the exported unsafe region is
the closure of ours (it may contain extra boundary points, never fewer), which keeps any "holds" an external
verifier proves valid for the property.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..lang.program import PropertySpec
from ..model.ir import Network
from ..inputs.vnnlib import LinearAtom, VnnlibCase, VnnlibProperty, write_vnnlib
from .verify import property_cases


def property_to_vnnlib(prop: PropertySpec, net: Network, path: str | Path) -> Path:
    """Write ``prop`` (over ``net``'s flat inputs and outputs) as a VNN-LIB 1 file; returns the path."""
    cases = []
    for case in property_cases(prop, net):
        spec = case.spec
        unsafe = []
        for j in range(spec.n_conj):
            rows = np.nonzero(spec.conj == j)[0]
            unsafe.append([LinearAtom({int(k): float(spec.A[r, k]) for k in np.nonzero(spec.A[r])[0]}, "<=",
                                      float(spec.d[r])) for r in rows])
        cases.append(VnnlibCase(np.asarray(case.lo, float), np.asarray(case.hi, float), unsafe or [[]]))
    return write_vnnlib(VnnlibProperty(net.input_size, net.output_size, cases, source=prop.name), path)
