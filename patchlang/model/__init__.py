"""The network IR and its import/export (ONNX, NNet), plus concrete evaluation with onnxruntime.

Heavy dependencies (onnx, onnxruntime) are imported lazily by the functions that need them, so importing this
package stays cheap.
"""

from .build import build_onnx, network_from_arrays
from .ir import (Affine, Clip, Elementwise, Layer, LeakyRelu, Linear, MaxPool, Network, ParamRef, Prefix, Relu,
                 apply_layer, decide)
from .loader import load_model
from .nnet_export import format_nnet, save_nnet
from .nnet_import import load_nnet
from .onnx_export import patched_proto, save_network
from .onnx_import import load_onnx
from .runtime import OrtModel, ort_outputs

__all__ = [
    "Affine", "Clip", "Elementwise", "Layer", "LeakyRelu", "Linear", "MaxPool", "Network", "ParamRef", "Prefix", "Relu", "apply_layer", "decide",
    "build_onnx", "network_from_arrays", "load_model", "load_onnx", "load_nnet", "save_nnet", "format_nnet",
    "patched_proto", "save_network", "OrtModel", "ort_outputs",
]
