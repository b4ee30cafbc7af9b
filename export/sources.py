"""`--from SOURCE`: a factory in a file or a module, or a `torch.export` program.

    path/to/file.py:factory     a callable in a Python file
    package.module:factory      a callable in an importable module
    path/to/model.pt2           written by `torch.export.save`
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

from export.errors import ExportError
from export.servable import SUPPORTED_DTYPES, Checked, checked, dtype_name

_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def describe_forms() -> str:
    return "use path/to/file.py:factory, package.module:factory or path/to/model.pt2"


def check_form(source: str) -> None:
    """Refuse a malformed SOURCE before anything is imported."""
    if source.endswith(".pt2"):
        return
    where, sep, attr = source.rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise ExportError(f"bad --from {source!r}: {describe_forms()}")
    if not where.endswith(".py") and not _MODULE_PATH.match(where):
        raise ExportError(f"bad --from {source!r}: {describe_forms()}")


def _import_file(path: Path):
    if not path.is_file():
        raise ExportError(f"source file {path} does not exist")
    name = "_export_source_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    sys.path.insert(0, str(path.resolve().parent))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ExportError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _import_module(dotted: str):
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name and dotted.startswith(exc.name):
            raise ExportError(f"no module named {dotted!r}") from None
        raise ExportError(f"cannot import {dotted}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise ExportError(f"cannot import {dotted}: {type(exc).__name__}: {exc}") from None


def load_factory(source: str) -> Checked:
    where, _, attr = source.rpartition(":")
    module = _import_file(Path(where)) if where.endswith(".py") else _import_module(where)
    factory = getattr(module, attr, None)
    if factory is None:
        raise ExportError(f"{where} has no attribute {attr!r}")
    if not callable(factory):
        raise ExportError(f"{source} is {type(factory).__name__}, not a callable returning export.Servable")
    try:
        servable = factory()
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{source} raised {type(exc).__name__}: {exc}") from None
    return checked(servable, source)


def _output_names(program) -> tuple[str, ...]:
    """The keys of a dict output, a named tuple's fields, else output / output_N."""
    spec = program.call_spec.out_spec
    leaves = spec.num_leaves if spec is not None else len(program.graph_signature.user_outputs)
    context = getattr(spec, "context", None)
    if isinstance(context, (list, tuple)) and len(context) == leaves and all(isinstance(c, str) for c in context):
        return tuple(context)
    if isinstance(context, type) and hasattr(context, "_fields") and len(context._fields) == leaves:
        return tuple(context._fields)
    return ("output",) if leaves == 1 else tuple(f"output_{i}" for i in range(leaves))


def load_program(source: str) -> Checked:
    import torch

    path = Path(source)
    if not path.is_file():
        raise ExportError(f"program file {path} does not exist")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ExportError(f"cannot load {path} with torch.export.load: {type(exc).__name__}: {exc}") from None
    names = tuple(program.graph_signature.user_inputs)
    example = program.example_inputs
    if not example or example[1] or len(example[0]) != len(names):
        raise ExportError(f"{path} holds no positional example inputs; save it with torch.export.export(module, args)")
    placeholders = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    inputs, axes = {}, {}
    for name, value in zip(names, example[0]):
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"{path}: input {name!r} is {type(value).__name__}, not a tensor")
        if dtype_name(value.dtype) not in SUPPORTED_DTYPES:
            raise ExportError(f"input {name!r} is {dtype_name(value.dtype)}; supported dtypes: {', '.join(SUPPORTED_DTYPES)}")
        shape = placeholders[name].shape
        if not shape or isinstance(shape[0], int):
            raise ExportError(f"{path}: input {name!r} has a static batch axis ({list(value.shape)}); export it with "
                              f"a torch.export.Dim for axis 0 in dynamic_shapes")
        inputs[name] = value.detach().cpu().contiguous()
        extra = tuple(i for i, d in enumerate(shape) if i and not isinstance(d, int))
        if extra:
            axes[name] = extra
    outputs = _output_names(program)
    return Checked(program, inputs, outputs, {}, axes, {}, {}, f"torch.export program {path.name}")


def load_source(source: str) -> Checked:
    check_form(source)
    return load_program(source) if source.endswith(".pt2") else load_factory(source)
