"""The backend contract (backends/contract.py): every backend implements it, nobody probes it."""

import ast
import re
import types
import typing
import warnings
from pathlib import Path

import pytest
import torch

import musicgen_edu as mg
from musicgen_edu.backends import Backend, NativeBackend, TransformersBackend, get_backend
from musicgen_edu.backends.contract import Conditioning
from musicgen_edu.sampling import Sampling, draw_tokens

PACKAGE = Path(mg.__file__).resolve().parent
BUILDERS = {"transformers": TransformersBackend, "native": NativeBackend,
            "native-int8": lambda model: NativeBackend(model, int8=True, pack=False)}


def _has_type(value, hint) -> bool:
    """``isinstance`` for an annotation: a class, or a union of classes (``X | None``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    return isinstance(value, hint)


ATTRIBUTES = typing.get_type_hints(Backend)        # name -> annotation, defaults included
ATTRIBUTES.update({name: typing.get_type_hints(member.fget)["return"]   # read-only ones
                   for name, member in vars(Backend).items() if isinstance(member, property)})


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_each_backend_implements_the_contract(gen, kind):
    backend = BUILDERS[kind](gen.model)
    assert isinstance(backend, Backend)
    assert set(ATTRIBUTES) == {"name", "mg", "path", "decoder", "fuses_draw", "replays",
                               "capture_s"}
    for name, hint in ATTRIBUTES.items():
        assert _has_type(getattr(backend, name), hint), (kind, name, hint)
    assert backend.name == kind and backend.mg is gen.model and backend.path.startswith(kind)
    assert (backend.decoder is None) == (kind == "transformers")
    assert not backend.fuses_draw                   # on a CPU without fixed-shape steps


def test_the_optional_capabilities_default_to_none_of_them(gen):
    backend = TransformersBackend(gen.model)
    assert (backend.decoder, backend.fuses_draw, backend.replays, backend.capture_s) == (
        None, False, 0, 0.0)
    assert NativeBackend(gen.model, pack=False, graphs=True).fuses_draw


def test_default_step_draw_is_step_then_draw(gen):
    backend, model = TransformersBackend(gen.model), gen.model
    cond = backend.encode_text(["jazz", None])
    tokens = torch.randint(0, 2048, (2, model.num_codebooks, 3),
                           generator=torch.Generator().manual_seed(0))
    settings = dict(batch=1, guidance_scale=3.0, use_sampling=True, temperature=1.0, top_k=50,
                    top_p=0.0, sampler="counter")
    seeds = torch.tensor([7])
    logits = backend.step(tokens, backend.start(cond, 4))
    drawn = backend.step_draw(tokens, backend.start(cond, 4), Sampling(**settings), seeds, 3)
    assert drawn.shape == (1, model.num_codebooks)
    assert torch.equal(drawn, draw_tokens(logits, seeds=seeds, step=3, **settings))


class _Structural:
    """A backend by shape alone (no subclassing): wraps the reference, member for member."""

    name = path = "structural"
    decoder, fuses_draw, replays, capture_s = None, False, 0, 0.0

    def __init__(self, model):
        inner = TransformersBackend(model)
        self.mg = model
        self.encode_text, self.start, self.step = inner.encode_text, inner.start, inner.step
        self.step_draw, self.release = inner.step_draw, inner.release
        self.encode_audio, self.decode_audio = inner.encode_audio, inner.decode_audio


def test_get_backend_takes_any_object_with_the_contract_and_refuses_others(gen):
    structural = _Structural(gen.model)
    assert isinstance(structural, Backend) and get_backend(structural, gen.model) is structural
    out = mg.MusicGenerator(gen.model, backend=structural).generate("jazz", duration=0.2, seed=1)
    assert out.timings["decoder"] == "structural"
    del structural.step                             # one method short: not a backend
    assert not isinstance(structural, Backend)
    with pytest.raises(mg.ConfigError, match="implements backends.Backend"):
        get_backend(structural, gen.model)


def test_conditioning_is_the_contracts_type():
    cond = Conditioning(states=torch.zeros(4, 3, 8), mask=None, prefix=True)
    assert len(cond) == 4


# --- no caller probes a backend ---------------------------------------------------------------
MEMBERS = {name for name in dir(Backend) if not name.startswith("_")} | set(ATTRIBUTES)
GENERIC = {"name", "path", "start", "step", "release", "decoder"}   # also other objects' names


def _probes(source: str) -> list[str]:
    """``getattr``/``hasattr`` calls on a backend: the object's expression names a backend,
    or the attribute asked for is one only a backend has (``"fuses_draw"``...)."""
    found = []
    with warnings.catch_warnings():                 # a module's odd escape is not our business
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(source)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
            continue
        target, attr = ast.unparse(node.args[0]), node.args[1]
        named = isinstance(attr, ast.Constant) and attr.value in MEMBERS - GENERIC
        if re.search(r"\bbackend\b", target) or named:
            found.append(ast.unparse(node))
    return found


def test_the_probe_scan_finds_probes():
    assert _probes('getattr(self.backend, "capture_s", 0.0)')
    assert _probes('x = getattr(obj, "fuses_draw", False)')
    assert _probes('hasattr(generator.backend, "decoder")')
    assert not _probes('getattr(torch.backends, "mps", None)')
    assert not _probes('self.backend.capture_s')


def test_no_module_probes_a_backend():
    probes = {str(path.relative_to(PACKAGE)): found for path in PACKAGE.rglob("*.py")
              if (found := _probes(path.read_text()))}
    assert probes == {}


def _calls(function: ast.AST) -> set[str]:
    """The names a function calls: ``f(...)`` -> ``f``, ``a.b.f(...)`` -> ``f``."""
    names = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute)
                      else "")
        elif isinstance(node, ast.Name) and node.id == "decode_step":   # partial(decode_step, …)
            names.add("decode_step")
    return names


def _method(path: str, cls: str, name: str) -> ast.AST:
    tree = ast.parse((Path(mg.__file__).parent / path).read_text(encoding="utf-8"))
    owner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return next(n for n in owner.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_the_eager_step_and_the_graph_capture_run_the_same_decode_step():
    """One decode step for every path: ``NativeBackend._step`` (eager) and
    ``GraphedStep.__call__`` (what the CUDA graph captures) both hand the step to
    ``native.decode_step`` and neither reaches the network or the draw on its own."""
    own = {"step_static", "draw", "forward", "decoder"}
    for path, cls, name in [("backends/native_backend.py", "NativeBackend", "_step"),
                            ("backends/cuda_graph.py", "GraphedStep", "__call__")]:
        calls = _calls(_method(path, cls, name))
        assert "decode_step" in calls, (cls, name)
        assert not calls & own, (cls, name, calls & own)
