"""The one interface every inference backend implements.

``Backend.run(model_name, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]`` runs one of
the bundle's models ("encoder", "step", "window") on named numpy inputs and returns named numpy
outputs, whatever library executes it. Inputs are checked against the artifact's recorded specs
(names, rank, fixed dimensions, dtype) before anything runs, so a wrong call fails with a message
naming the tensor instead of a library-specific error.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np

from affedge.bundle import Bundle


class BackendUnavailable(RuntimeError):
    """This backend cannot run this bundle here (library missing, artifact missing, engine built
    for another GPU/TensorRT...). The message says why; ``select_backend`` moves on."""


class Backend(abc.ABC):
    """Base class: holds the bundle and the per-model I/O specs from its manifest."""

    #: short name reported by select_backend ("onnxruntime", "tensorrt", "torchscript", "torch")
    name: str = "backend"
    #: manifest artifact format this backend runs
    format: str = ""

    def __init__(self, bundle: Bundle, models: tuple[str, ...] | None = None):
        self.bundle = bundle
        self._specs: dict[str, dict[str, Any]] = {}
        names = models if models is not None else ("encoder", "step", "window")
        for m in names:
            rec = self._record(m)
            if rec is not None:
                self._specs[m] = rec
        if not self._specs:
            raise BackendUnavailable(
                f"{self.name}: bundle {bundle.source} has no {self.format!r} artifacts for "
                f"{list(names)}")

    # -- which artifact record serves a model (subclasses may pick by precision)
    def _record(self, model: str) -> dict | None:
        return self.bundle.find(model, self.format)

    @property
    def models(self) -> list[str]:
        return list(self._specs)

    @property
    def providers(self) -> list[str]:
        """What actually executes the models (e.g. ORT's session.get_providers())."""
        return [self.name]

    def input_specs(self, model: str) -> list[dict]:
        return list(self._spec(model)["inputs"])

    def output_specs(self, model: str) -> list[dict]:
        return list(self._spec(model)["outputs"])

    def input_names(self, model: str) -> list[str]:
        return [s["name"] for s in self._spec(model)["inputs"]]

    def output_names(self, model: str) -> list[str]:
        return [s["name"] for s in self._spec(model)["outputs"]]

    def precision(self, model: str) -> str:
        return self._spec(model)["precision"]

    def _spec(self, model: str) -> dict:
        try:
            return self._specs[model]
        except KeyError:
            raise KeyError(f"{self.name}: no model {model!r}; this backend has "
                           f"{self.models}") from None

    def check_inputs(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate names/shapes/dtypes; returns C-contiguous arrays in input order."""
        specs = self._spec(model)["inputs"]
        want = [s["name"] for s in specs]
        missing = [n for n in want if n not in inputs]
        extra = [n for n in inputs if n not in want]
        if missing or extra:
            raise ValueError(f"{self.name}/{model}: inputs must be {want}; missing {missing}, "
                             f"unexpected {extra}")
        out: dict[str, np.ndarray] = {}
        symbols: dict[str, int] = {}
        for s in specs:
            a = inputs[s["name"]]
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{self.name}/{model}: input {s['name']!r} must be a numpy array, "
                                f"got {type(a).__name__}")
            if a.dtype != np.dtype(s["dtype"]):
                raise TypeError(f"{self.name}/{model}: input {s['name']!r} must be {s['dtype']}, "
                                f"got {a.dtype}")
            shape = s["shape"]
            ok = a.ndim == len(shape)
            for d, want_d in zip(a.shape, shape if ok else []):
                if isinstance(want_d, str):
                    if symbols.setdefault(want_d, d) != d:
                        ok = False
                elif d != want_d:
                    ok = False
            if not ok:
                raise ValueError(f"{self.name}/{model}: input {s['name']!r} must have shape "
                                 f"{shape} (consistent symbols), got {list(a.shape)}")
            out[s["name"]] = np.ascontiguousarray(a)
        return out

    @abc.abstractmethod
    def run(self, model_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``model_name`` on named inputs; returns every output by name (numpy, float32).
        The returned arrays are the caller's: a later call must not write into them (the
        engine keeps row views of the step's state outputs as the streams' next states)."""

    def close(self) -> None:
        """Release sessions/engines. Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} providers={self.providers} models={self.models}>"
