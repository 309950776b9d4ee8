"""The product of per-layer operator norms as an upper bound of a network's Lipschitz constant.

For a chain ``f = phi_L o A_L o ... o phi_1 o A_1`` of affine maps ``A_i(x) = W_i x + b_i`` and
``K_i``-Lipschitz activations ``phi_i``, ``Lip_p(f) <= prod_i ||W_i||_{p->p} K_i`` (the norms from
:mod:`.opnorm`).

The product is only a valid bound for a plain chain. :func:`affine_product_bound` traces the
forward pass with ``torch.fx`` (decoupled layers and ``Normalize`` are leaves) and refuses -- with
the reason -- networks with skip connections, branches, decoupled layers (not affine: they divide
by ``||x||`` and ``||w||``), input-statistics normalisations or any operation it does not know.
"""


from __future__ import annotations

import logging
import math
import operator
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from robustbench_dc.lipschitz._utils import eval_mode, model_device_dtype
from robustbench_dc.lipschitz.opnorm import SQRT2, LayerNorm, atomic_module, layer_operator_norms, module_norm, refusal_entry
from robustbench_dc.operators import DecoupledLayer
from robustbench_dc.zoo.base import Normalize

__all__ = ["BoundResult", "affine_product_bound"]

log = logging.getLogger(__name__)


@dataclass
class BoundResult:
    """Product of per-layer norms: an UPPER bound of the global Lipschitz constant, or the reason why not.

    ``l2`` / ``linf`` bound the logit map (``L2 -> L2``, ``Linf -> Linf``); ``margin_l2 = sqrt(2) l2``
    bounds ``||grad m||_2`` and ``margin_linf = 2 linf`` bounds ``||grad m||_1`` for the margin
    ``m = f_y - max_{j != y} f_j`` (``|Delta m| <= |Delta f_y| + max_j |Delta f_j|``).
    """

    computed: bool
    reason: str | None = None
    reasons: list[str] = field(default_factory=list)
    l2: float | None = None
    linf: float | None = None
    margin_l2: float | None = None
    margin_linf: float | None = None
    factors: list[dict] = field(default_factory=list)
    all_converged: bool | None = None
    kind: str = "upper bound (product of per-layer operator norms)"

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- the chain walker


def _tracer_class() -> type:
    import torch.fx as fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, (DecoupledLayer, Normalize)) or super().is_leaf_module(m, qualname)

    return _Tracer


def _is_tensor(node: Any) -> bool:
    from torch.fx.passes.shape_prop import TensorMetadata

    return hasattr(node, "meta") and isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def _where(node: Any) -> str:
    if node.op == "call_module":
        return repr(str(node.target))
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack), None) if stack else None
    if isinstance(path, str) and path:
        return f"{path!r} ({_op_name(node)})"
    return _op_name(node)


def _op_name(node: Any) -> str:
    t = node.target
    return f"'{t}'" if isinstance(t, str) else f"'{getattr(t, '__name__', str(t))}'"


_ISO_NAMES = {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze", "permute", "transpose", "clone",
              "detach", "neg", "unflatten", "view_as", "reshape_as"}
_ACT_NAMES = {"relu": 1.0, "relu_": 1.0, "relu6": 1.0, "tanh": 1.0, "tanh_": 1.0, "hardtanh": 1.0, "softplus": 1.0,
              "softsign": 1.0, "sigmoid": 0.25, "sigmoid_": 0.25, "silu": 1.1, "gelu": 1.13, "hardsigmoid": 1 / 6}
_POOL_PARAMS = {
    "max_pool": (["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"], "MaxPool"),
    "avg_pool": (["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"], "AvgPool"),
    "adaptive_avg_pool": (["output_size"], "AdaptiveAvgPool"),
    "adaptive_max_pool": (["output_size", "return_indices"], "AdaptiveMaxPool"),
}


def _functional_module(fname: str, node: Any) -> nn.Module | None:
    """An ``nn`` pooling module equivalent to a functional pooling call, if it is one."""
    base = fname.lstrip("_")
    for prefix, (params, cls) in _POOL_PARAMS.items():
        if base.startswith(prefix) and base[len(prefix):] in ("1d", "2d", "3d"):
            kw = dict(zip(params, node.args[1:]))
            kw.update({k: v for k, v in node.kwargs.items() if k in params})
            if kw.pop("return_indices", False):
                return None
            if "stride" in kw and kw["stride"] in (None, []):
                kw.pop("stride")
            return getattr(nn, cls + base[len(prefix):].upper())(**kw)
    return None


def _functional_factor(node: Any, shape: Sequence[int], iters: int, tol: float, method: str, seed: int
                       ) -> tuple[float, float, str] | str:
    """(l2, linf, description) of a call_function / call_method node, or the reason it is refused."""
    t = node.target
    fname = t if isinstance(t, str) else getattr(t, "__name__", str(t))
    if fname in _ISO_NAMES or t in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, operator.neg):
        return 1.0, 1.0, "isometry"
    if fname in _ACT_NAMES:
        return _ACT_NAMES[fname], _ACT_NAMES[fname], "Lipschitz constant"
    if fname in ("leaky_relu", "leaky_relu_"):
        slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
        k = max(1.0, abs(float(slope)))
        return k, k, "Lipschitz constant"
    if fname in ("elu", "elu_"):
        k = max(1.0, float(node.args[1] if len(node.args) > 1 else node.kwargs.get("alpha", 1.0)))
        return k, k, "Lipschitz constant"
    if fname in ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout"):
        training = node.args[2] if len(node.args) > 2 else node.kwargs.get("training", True)
        if training:
            return f"functional {fname} with training=True is random"
        return 1.0, 1.0, "isometry (evaluation mode)"
    consts = [a for a in node.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if (t in (operator.mul, torch.mul) or fname in ("mul", "mul_")) and len(consts) == 1 and len(node.args) == 2:
        c = abs(float(consts[0]))
        return c, c, f"scaling by {c:g}"
    if (t in (operator.truediv, torch.div) or fname in ("div", "div_", "truediv")) and len(node.args) == 2 \
            and consts == [node.args[1]] and not node.kwargs:
        c = 1.0 / abs(float(consts[0]))
        return c, c, f"scaling by {c:g}"
    if t in (operator.add, operator.sub, torch.add, torch.sub) or fname in ("add", "sub", "add_", "sub_"):
        if len(node.args) == 2 and len(consts) == 1:
            return 1.0, 1.0, "translation"
    if fname in ("mean", "sum"):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dims is not None:
            dims = [dims] if isinstance(dims, int) else list(dims)
            nd = len(shape)
            dims = [d % nd for d in dims]
            if 0 not in dims:
                n = math.prod(int(shape[d]) for d in dims)
                if fname == "mean":
                    return 1.0 / math.sqrt(n), 1.0, f"mean over {n} entries"
                return math.sqrt(n), float(n), f"sum over {n} entries"
    module = _functional_module(fname, node) if isinstance(fname, str) else None
    if module is not None:
        entry = module_norm(fname, module, shape, iters, tol, method, seed)
        if entry.computed:
            return entry.l2, entry.linf, entry.method  # type: ignore[return-value]
        return entry.reason or "unsupported"
    return f"operation {_op_name(node)} is not understood by the layer-wise walker"


def affine_product_bound(model: nn.Module, input_shape: Sequence[int], iters: int = 200, tol: float = 1e-7,
                         method: str = "auto", seed: int = 0, layers: Sequence[LayerNorm] | None = None
                         ) -> BoundResult:
    """Upper bound ``prod_i ||A_i|| K_i`` on the global Lipschitz constant of a plain chain, or why not.

    The forward pass is traced with ``torch.fx`` (decoupled layers and ``Normalize`` are leaves).
    The bound is computed only when the graph is a single chain from the input to the logits whose
    every operation is an affine layer, a known Lipschitz nonlinearity, a pooling or a reshape.
    Otherwise ``computed=False`` and ``reason`` names the offending layers: decoupled layers (not
    affine), skip connections / branches (the product is not valid for a residual network),
    normalisations by input statistics, unknown operations, or a forward pass that cannot be traced.

    Args:
        model: the network (analysed in evaluation mode).
        input_shape: shape of ONE example (no batch dimension).
        iters, tol, method, seed: as :func:`layer_operator_norms`.
        layers: norms already computed by :func:`layer_operator_norms` (reused by name and shape).
    """
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    cache = {(l.name, tuple(l.input_shape or ())): l for l in (layers or [])}
    device, dtype = model_device_dtype(model)
    if atomic_module(model):  # a single layer: the chain is the layer itself
        with eval_mode(model):
            entry = layer_operator_norms(model, input_shape, iters, tol, method, seed)[0]
        if not entry.computed:
            return BoundResult(False, entry.reason, [entry.reason or ""])
        factor = {"node": entry.name, "layer": "", "type": entry.type, "kind": entry.kind, "l2": entry.l2,
                  "linf": entry.linf}
        return BoundResult(True, None, [], entry.l2, entry.linf, SQRT2 * entry.l2, 2.0 * entry.linf,  # type: ignore
                           [factor], entry.converged is not False)
    with eval_mode(model):
        try:
            graph = _tracer_class()().trace(model)
            gm = fx.GraphModule(model, graph)
            ShapeProp(gm).propagate(torch.zeros((1, *input_shape), device=device, dtype=dtype))
        except Exception as exc:  # noqa: BLE001 - any tracing failure means "no bound"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = (f"the forward pass could not be traced with torch.fx ({type(exc).__name__}: {first}); "
                      "the walker only bounds plain chains of known layers")
            return BoundResult(False, reason, [reason])
        reasons: list[str] = []
        decoupled: list[str] = []
        skips: list[str] = []
        factors: list[dict] = []
        converged = True
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        head = placeholders[0] if placeholders else None
        if len(placeholders) != 1:
            reasons.append(f"the forward pass takes {len(placeholders)} inputs; only one is supported")
        branched: set[str] = set()
        for index, node in enumerate(graph.nodes):
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                if node.args[0] is not head:
                    reasons.append("the network output is not the end of a single chain")
                continue
            if not _is_tensor(node):
                continue  # metadata (x.size(0), x.shape)
            ins = [a for a in node.all_input_nodes if _is_tensor(a)]
            where = _where(node)
            if len(ins) != 1:
                attrs = [a.target for a in ins if a.op == "get_attr"]
                if attrs and len(ins) - len(attrs) == 1:
                    reasons.append(f"{where} uses the tensor attribute(s) {attrs} directly; not supported")
                else:
                    skips.append(f"{where} merges {len(ins)} tensors")
                head = node
                continue
            src = ins[0]
            users = [u for u in src.users if _is_tensor(u)]
            if len(users) > 1 and src.name not in branched:
                branched.add(src.name)
                skips.append(f"{_where(src)} feeds {len(users)} operations")
            elif src is not head and src.name not in branched:
                reasons.append(f"{where} does not read the previous layer's output (not a plain chain)")
            shape = tuple(src.meta["tensor_meta"].shape)
            if node.op == "call_module":
                module = model.get_submodule(node.target)
                refused = refusal_entry(node.target, module, shape)
                if refused is not None and refused.kind == "decoupled":
                    decoupled.append(f"{node.target!r} ({refused.type})")
                elif refused is not None:
                    reasons.append(f"layer {node.target!r}: {refused.reason}")
                else:  # the norm is computed below, once the network is known to be a plain chain
                    factors.append({"node": node.name, "layer": node.target, "type": type(module).__name__,
                                    "kind": None, "l2": None, "linf": None, "_pending": (module, shape, index)})
            else:
                got = _functional_factor(node, shape, iters, tol, method, seed * 1_000_003 + index)
                if isinstance(got, str):
                    reasons.append(f"{where}: {got}")
                else:
                    factors.append({"node": node.name, "layer": None, "type": _op_name(node).strip("'"),
                                    "kind": got[2], "l2": got[0], "linf": got[1]})
            head = node
    if skips:
        reasons.insert(0, f"skip connections / branches ({', '.join(skips[:4])}{', ...' if len(skips) > 4 else ''}"
                          f"; {len(skips)} in all): the layer-wise product is not a valid bound for a network "
                          "that is not a plain chain")
    if decoupled:
        reasons.insert(0, f"{len(decoupled)} decoupled layer(s) are not affine (h(||x||) g(theta) divides by ||x|| "
                          f"and ||w||), so they have no operator norm: {', '.join(decoupled[:6])}"
                          f"{f' and {len(decoupled) - 6} more' if len(decoupled) > 6 else ''}")
    if reasons:
        uniq = list(dict.fromkeys(reasons))
        text = "; ".join(uniq[:3]) + (f"; and {len(uniq) - 3} more" if len(uniq) > 3 else "")
        log.info("affine_product_bound: no bound computed: %s", text)
        return BoundResult(False, text, uniq)
    with eval_mode(model):
        for f in factors:
            pending = f.pop("_pending", None)
            if pending is None:
                continue
            module, shape, index = pending
            norm = cache.get((f["layer"], tuple(shape[1:])))
            if norm is None:
                norm = module_norm(f["layer"], module, shape, iters, tol, method, seed * 1_000_003 + index)
            converged = converged and norm.converged is not False
            f.update(kind=norm.kind, l2=norm.l2, linf=norm.linf)
    l2 = math.prod(f["l2"] for f in factors)
    linf = math.prod(f["linf"] for f in factors)
    return BoundResult(True, None, [], l2, linf, SQRT2 * l2, 2.0 * linf, factors, converged)
