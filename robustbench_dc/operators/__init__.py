"""The decoupled operator family (Liu et al., "Decoupled Networks", CVPR 2018).

``f_d(w, x) = h(||w||, ||x||) * g(theta)``: a magnitude function ``h`` times an angular
function ``g``. See :class:`DecoupledConv2d` for the layer, :func:`get_operator` for
operator specs (``"tanh+cos"``, ``"baseline"``, ``"my_ops.py:MyOp"``) and
:func:`convert` to decouple an existing network.
"""

from robustbench_dc.operators.angular import ANGULARS, Angular, angle, get_angular, list_angulars, register_angular
from robustbench_dc.operators.compiled import compile_available
from robustbench_dc.operators.convert import classifier_name, convert
from robustbench_dc.operators.functional import (
    WEIGHTED,
    decoupled_conv2d,
    decoupled_linear,
    decoupled_response,
    filter_norm,
    patch_norm2d,
)
from robustbench_dc.operators.hooks import (
    WeightProjection,
    compiled_responses,
    decoupled_layers,
    enable_weighted_gradients,
    orthogonality_penalty,
    project_weights,
    recalibrate_xnorm,
    resolve_compile,
    set_compiled,
)
from robustbench_dc.operators.layers import RHO_MODES, DecoupledConv2d, DecoupledLayer, DecoupledLinear
from robustbench_dc.operators.magnitude import MAGNITUDES, Magnitude, get_magnitude, list_magnitudes, register_magnitude
from robustbench_dc.operators.registry import (
    ENTRY_POINT_GROUP,
    OPERATORS,
    OperatorSpec,
    PluginError,
    UnknownOperatorError,
    entry_point_operators,
    get_operator,
    list_operators,
    load_reference,
    reference_source_sha256,
    register_operator,
)

__all__ = [
    "ANGULARS", "Angular", "angle", "get_angular", "list_angulars", "register_angular",
    "classifier_name", "convert",
    "WEIGHTED", "decoupled_conv2d", "decoupled_linear", "decoupled_response", "filter_norm", "patch_norm2d",
    "WeightProjection", "decoupled_layers", "enable_weighted_gradients", "orthogonality_penalty",
    "project_weights", "recalibrate_xnorm", "compile_available", "compiled_responses", "resolve_compile", "set_compiled",
    "RHO_MODES", "DecoupledConv2d", "DecoupledLayer", "DecoupledLinear",
    "MAGNITUDES", "Magnitude", "get_magnitude", "list_magnitudes", "register_magnitude",
    "ENTRY_POINT_GROUP", "OPERATORS", "OperatorSpec", "PluginError", "UnknownOperatorError", "entry_point_operators",
    "get_operator", "list_operators", "load_reference", "reference_source_sha256", "register_operator",
]
