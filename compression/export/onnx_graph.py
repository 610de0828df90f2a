"""What is checked and fixed in an exported ONNX graph.

Checks (:func:`check_written_file`): one self-contained file (:func:`external_data_tensors`), standard operator
domains only (:func:`check_standard_domains`), the ONNX checker, one input ``input`` and one output ``logits`` with a
dynamic batch dimension. Fixes of the dynamo exporter's graph (:func:`tidy_exported_model`): constant folding kept to
small tensors, per-node debug metadata dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import onnxscript.optimizer

from compression.export.onnx_records import INPUT_NAME, OUTPUT_NAME, NonStandardDomainError, OnnxExportError

__all__ = [
    "FOLDED_CONSTANT_ELEMENT_LIMIT",
    "STANDARD_DOMAINS",
    "check_standard_domains",
    "check_written_file",
    "external_data_tensors",
    "strip_debug_metadata",
    "tidy_exported_model",
]

#: Operator domains a delivered graph may use: the default ONNX domain (spelled ``""`` or
#: ``"ai.onnx"``) and the traditional-ML domain. Anything else needs a custom runtime.
STANDARD_DOMAINS: frozenset[str] = frozenset({"", "ai.onnx", "ai.onnx.ml"})

# Constant folding may neither read nor create constants larger than this many elements. The exporter's own
# limits (8,192 in, 262,144 out) let it expand a binary layer's 1-bit packed weights into float32 tensors 32x
# their size (binary_resnet20 on 1x28x28: a 2.5 MB file instead of 0.11 MB); shape arithmetic and other small
# folds stay. ONNX Runtime folds the rest itself when it loads the model.
FOLDED_CONSTANT_ELEMENT_LIMIT = 64


def _graph_domains(graph: onnx.GraphProto, found: dict[str, set[str]]) -> None:
    for node in graph.node:
        found.setdefault(node.domain, set()).add(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _graph_domains(attribute.g, found)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    _graph_domains(subgraph, found)


def check_standard_domains(model: onnx.ModelProto | str | os.PathLike[str]) -> None:
    """Raise :class:`NonStandardDomainError` if the graph uses an operator domain outside
    :data:`STANDARD_DOMAINS` (declared opset imports, nodes of the main graph, of control-flow
    subgraphs and of model-local functions are all inspected)."""
    if isinstance(model, str | os.PathLike):
        model = onnx.load(os.fspath(model), load_external_data=False)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto or a path, got {type(model).__name__}")
    found: dict[str, set[str]] = {}
    _graph_domains(model.graph, found)
    for function in model.functions:
        found.setdefault(function.domain, set()).add(function.name)
        for node in function.node:
            found.setdefault(node.domain, set()).add(node.op_type)
    imports = {opset.domain for opset in model.opset_import}
    for function in model.functions:
        imports.update(opset.domain for opset in function.opset_import)
    bad_nodes = {domain: ops for domain, ops in found.items() if domain not in STANDARD_DOMAINS}
    bad_imports = sorted(imports - STANDARD_DOMAINS - set(bad_nodes))
    if bad_nodes or bad_imports:
        parts = [f"{domain!r} (ops: {', '.join(sorted(ops))})" for domain, ops in sorted(bad_nodes.items())]
        parts += [f"{domain!r} (opset import)" for domain in bad_imports]
        raise NonStandardDomainError(
            "ONNX graph uses non-standard operator domains: "
            + "; ".join(parts)
            + f". Only {sorted(STANDARD_DOMAINS)} are allowed."
        )


def external_data_tensors(proto: onnx.ModelProto) -> list[str]:
    """Names of the tensors of ``proto`` stored outside the file (initializers, sparse initializers and
    tensor-valued attributes of every graph, subgraph and model-local function)."""
    tensors = list(_graph_tensors(proto.graph))
    for function in proto.functions:
        for node in function.node:
            tensors.extend(_attribute_tensors(node))
    return [t.name for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node)


def _attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR:
            yield attribute.t
        elif attribute.type == onnx.AttributeProto.TENSORS:
            yield from attribute.tensors
        elif attribute.type == onnx.AttributeProto.SPARSE_TENSOR:
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        elif attribute.type == onnx.AttributeProto.GRAPH:
            yield from _graph_tensors(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph)


def check_written_file(path: Path) -> int:
    """Structural checks on the exported file; returns its default-domain opset version."""
    proto = onnx.load(str(path), load_external_data=False)
    external = external_data_tensors(proto)
    if external:
        raise OnnxExportError(f"exported graph references external data for tensors {external[:5]}")
    check_standard_domains(proto)  # first: the clearer message when a custom op slipped in
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise OnnxExportError(f"exported graph fails the ONNX checker: {exc}") from exc
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise OnnxExportError(
            f"exported graph has inputs {inputs} and outputs {outputs}; expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]"
        )
    for value, name in ((proto.graph.input[0], INPUT_NAME), (proto.graph.output[0], OUTPUT_NAME)):
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            raise OnnxExportError(f"the batch dimension of {name!r} is not dynamic in the exported graph")
    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    return int(versions[0]) if versions else 0


def tidy_exported_model(model: Any) -> Any:
    """The dynamo exporter's graph (an ``onnx_ir`` model) optimised with constant folds of at most
    :data:`FOLDED_CONSTANT_ELEMENT_LIMIT` elements, without per-node debug metadata."""
    model = onnxscript.optimizer.optimize(
        model,
        input_size_limit=FOLDED_CONSTANT_ELEMENT_LIMIT,
        output_size_limit=FOLDED_CONSTANT_ELEMENT_LIMIT,
    )
    strip_debug_metadata(model)
    return model


def strip_debug_metadata(model: Any) -> None:
    """Drop the exporter's per-node debug metadata (Python stack traces, FX node names and types).

    It is as large as the weights themselves (1.0 MB of 2.1 MB for adder_resnet20 on 1x28x28), means
    nothing to the runtime on a device, and leaks local source paths into a file users ship.
    """
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in graph:
            node.metadata_props.clear()
            for value in node.outputs:
                value.metadata_props.clear()
