"""The network IR and its import/export (ONNX, NNet), plus concrete evaluation with onnxruntime.

Heavy dependencies (onnx, onnxruntime) are imported lazily by the functions that need them, so importing this
package stays cheap.
"""

import importlib
from typing import Any

# Exported names -> their module, imported on first use (PEP 562): reading a cached result needs only the IR, and
# the import of every reader and writer would cost a cache hit of `patchlang run` a tenth of its time.
_EXPORTS = {
    "build_onnx": "build", "network_from_arrays": "build", "load_model": "loader", "format_nnet": "nnet_export",
    "save_nnet": "nnet_export", "load_nnet": "nnet_import", "patched_proto": "onnx_export",
    "save_network": "onnx_export", "load_onnx": "onnx_import", "OrtModel": "runtime", "ort_outputs": "runtime",
    **{name: "ir" for name in ("Affine", "Clip", "Elementwise", "Layer", "LeakyRelu", "Linear", "MaxPool", "Network", "ParamRef", "Prefix", "Relu",
                               "apply_layer", "decide")},
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Affine", "Clip", "Elementwise", "Layer", "LeakyRelu", "Linear", "MaxPool", "Network", "ParamRef", "Prefix", "Relu", "apply_layer", "decide",
    "build_onnx", "network_from_arrays", "load_model", "load_onnx", "load_nnet", "save_nnet", "format_nnet",
    "patched_proto", "save_network", "OrtModel", "ort_outputs",
]
