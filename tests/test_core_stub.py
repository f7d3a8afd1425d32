"""The type stub _core.pyi against the compiled module it describes: the same public names at every
level (module, Model, kernels, kernels.Packed), properties where the module has properties, and
each function's parameters (names, order, defaults) as pybind11 reports them. A binding added,
removed or changed in csrc/bindings.cpp without the stub fails here.

Names with a leading underscore are the stub's own typing helpers and are not compared.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import ModuleType

import pytest

import llama_local
from llama_local import _core

STUB = Path(llama_local.__file__).with_name("_core.pyi")


def public(names) -> set[str]:
    return {n for n in names if not n.startswith("_")}


class Stub:
    """The parsed stub: module-level definitions, and `kernels: _Kernels` resolved to its class."""

    def __init__(self, path: Path):
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.top = self.members(self.tree.body)

    @staticmethod
    def members(body) -> dict[str, ast.AST]:
        out: dict[str, ast.AST] = {}
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                out[node.name] = node
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                out[node.target.id] = node
        return out

    def class_body(self, node: ast.AST) -> dict[str, ast.AST]:
        """Members of a class, or of the class an annotated module attribute is declared as."""
        if isinstance(node, ast.AnnAssign):
            node = self.top[ast.unparse(node.annotation)]
        assert isinstance(node, ast.ClassDef), ast.dump(node)
        return self.members(node.body)


@pytest.fixture(scope="module")
def stub() -> Stub:
    assert STUB.is_file(), f"{STUB} is missing (it ships next to the compiled module)"
    return Stub(STUB)


def runtime_params(fn) -> list[tuple[str, str | None]]:
    """(name, default or None) of each parameter, from pybind11's signature line `f(a: T, b: T = 1) -> R`."""
    first = (fn.__doc__ or "").splitlines()[0]
    inner = first[first.index("(") + 1:first.rindex(") ->")]
    parts, depth, cur = [], 0, ""
    for ch in inner:  # split at the commas outside brackets (types like dict[str, int] have some)
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    out = []
    for p in parts:
        name, _, rest = p.strip().partition(":")
        _, eq, default = rest.partition(" = ")
        out.append((name.strip(), default.strip() if eq else None))
    return out


def stub_params(node: ast.FunctionDef) -> list[tuple[str, str | None]]:
    args = node.args.posonlyargs + node.args.args
    defaults = [None] * (len(args) - len(node.args.defaults)) + list(node.args.defaults)
    assert not node.args.kwonlyargs and node.args.vararg is None and node.args.kwarg is None, node.name
    return [(a.arg, None if d is None else repr(ast.literal_eval(d))) for a, d in zip(args, defaults)]


def decorators(node: ast.AST) -> set[str]:
    return {ast.unparse(d) for d in getattr(node, "decorator_list", [])}


def check_function(fn, node: ast.AST, where: str) -> None:
    assert isinstance(node, ast.FunctionDef), f"{where}: the stub declares no function"
    want = [(n, None if d is None else repr(ast.literal_eval(d))) for n, d in runtime_params(fn)]
    assert stub_params(node) == want, where


def check_class(cls, body: dict[str, ast.AST], where: str) -> None:
    assert public(body) == public(dir(cls)), where
    for name in public(dir(cls)):
        attr = inspect.getattr_static(cls, name)
        node = body[name]
        if isinstance(attr, property):
            assert "property" in decorators(node), f"{where}.{name} is a property"
        elif isinstance(attr, type):
            check_class(attr, Stub.members(node.body), f"{where}.{name}")
        else:
            assert "property" not in decorators(node), f"{where}.{name} is not a property"
            check_function(getattr(cls, name), node, f"{where}.{name}")
    if "__init__" in body:
        check_function(cls.__init__, body["__init__"], f"{where}.__init__")


# Declared in the stub, compiled only in some builds.
OPTIONAL = {name: _core.build_info()["cuda_compiled"] for name in ("cuda_kernels", "CudaModel")}


def test_module_names(stub):
    absent = {name for name, built in OPTIONAL.items() if not built}
    assert public(stub.top) - absent == public(dir(_core))


def test_module_functions(stub):
    for name in ("build_info", "default_isa"):
        check_function(getattr(_core, name), stub.top[name], name)


def test_model(stub):
    check_class(_core.Model, stub.class_body(stub.top["Model"]), "Model")


def test_cuda_model(stub):
    if not OPTIONAL["CudaModel"]:
        pytest.skip("_core.CudaModel exists only in CUDA builds; this one has no CUDA")
    check_class(_core.CudaModel, stub.class_body(stub.top["CudaModel"]), "CudaModel")


@pytest.mark.parametrize("name", ["kernels", "device_math", "cuda_kernels"])
def test_submodules(stub, name):
    if not OPTIONAL.get(name, True):
        pytest.skip(f"_core.{name} exists only in CUDA builds; this one has no CUDA")
    module = getattr(_core, name)
    assert isinstance(module, ModuleType)
    node = stub.top[name]
    declared = stub.top[ast.unparse(node.annotation)]
    assert [ast.unparse(b) for b in declared.bases] == ["ModuleType"]
    body = stub.class_body(node)
    assert public(body) == public(dir(module))
    for attr_name in public(dir(module)):
        attr = getattr(module, attr_name)
        where = f"{name}.{attr_name}"
        if isinstance(attr, type):
            check_class(attr, Stub.members(body[attr_name].body), where)
        elif isinstance(body[attr_name], ast.AnnAssign):  # a constant: its declared type
            assert type(attr).__name__ == ast.unparse(body[attr_name].annotation), where
        else:
            assert "staticmethod" in decorators(body[attr_name]), f"{where}: a module function is a staticmethod here"
            check_function(attr, body[attr_name], where)


def test_the_checker_notices_drift(stub):
    # The comparison has teeth: a renamed parameter, a changed default and a missing name all show.
    def fake(doc):
        def f():
            pass
        f.__doc__ = doc
        return f

    node = Stub.members(stub.class_body(stub.top["kernels"])["Packed"].body)["time_matmul"]
    real = _core.kernels.Packed.time_matmul.__doc__
    check_function(fake(real), node, "same")
    with pytest.raises(AssertionError):
        check_function(fake(real.replace("iters:", "iterations:")), node, "renamed")
    with pytest.raises(AssertionError):
        check_function(fake(real.replace("= 10", "= 11")), node, "default")
    with pytest.raises(AssertionError):
        check_class(_core.Model, {k: v for k, v in stub.class_body(stub.top["Model"]).items() if k != "reset"}, "m")
