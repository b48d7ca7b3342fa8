"""``FallbackBackend``: a list of candidate backends that stands in for one; a failed call is re-run
on the next candidate.

Running a model changes no state (the engine's temporal states are inputs and outputs of the step
call), so a retry inside :meth:`FallbackBackend.run` is all that fallback needs: the tick that was
running goes on with the same inputs on the next backend and its predictions equal an
uninterrupted run.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

RUNTIME_MODELS = ("encoder", "step")


def check_candidate(c) -> None:
    """TypeError unless ``c`` is a backend name or an object with ``run(model_name, inputs)``."""
    from affedge.sdk.backends.base import Backend

    if not (isinstance(c, (str, Backend)) or callable(getattr(c, "run", None))):
        raise TypeError(f"backend must be a backend name (e.g. 'auto') or an "
                        f"affedge.sdk.backends.Backend (an object with "
                        f"run(model_name, inputs)), got {type(c).__name__}")


def check_models(be) -> None:
    """ValueError when a backend instance cannot run the runtime's models."""
    models = getattr(be, "models", None)
    missing = [m for m in RUNTIME_MODELS if models is not None and m not in models]
    if missing:
        raise ValueError(f"backend {be.name!r} cannot run {missing} (it has {be.models}); "
                         f"the runtime needs {list(RUNTIME_MODELS)}")


class FallbackBackend:
    """Candidates (names for ``select_backend`` and/or Backend instances), best first.

    The first candidate that can be created runs. When its ``run()`` raises, the failure is
    recorded in ``failures`` as ``(backend_name, repr(error))`` (and passed to ``on_failure``),
    the failed backend is closed if this object created it, the next candidate that can be
    created takes over and the same call is run again. With no candidate left, RuntimeError
    names every failure. Backends passed in as instances belong to the caller (never closed).
    """

    def __init__(self, bundle, candidates: Sequence, options: Mapping | None = None,
                 on_failure: Callable[[str, BaseException], None] | None = None):
        if not candidates:
            raise ValueError("backend: the candidate list is empty")
        for c in candidates:
            check_candidate(c)
        self.bundle = bundle
        self._options = dict(options or {})
        self._queue = list(candidates)
        self._owned: set[int] = set()
        self.failures: list[tuple[str, str]] = []
        self.not_created: list[str] = []  # "name: why" for candidates that could not be made
        self.on_failure = on_failure
        self.current = self._next()
        if self.current is None:
            raise RuntimeError(f"no backend can run bundle {bundle.source}:\n"
                               + "\n".join(self.not_created))

    def _next(self):
        from affedge.sdk.backends.base import BackendUnavailable
        from affedge.sdk.backends.select import select_backend

        while self._queue:
            c = self._queue.pop(0)
            if isinstance(c, str):
                try:
                    be = select_backend(self.bundle, c, **self._options)
                except (RuntimeError, BackendUnavailable, ImportError) as exc:
                    self.not_created.append(f"  {c}: {exc}")
                    continue
                self._owned.add(id(be))
            else:
                check_models(c)
                be = c
            return be
        return None

    @property
    def remaining(self) -> tuple:
        """The candidates not tried yet, in order."""
        return tuple(self._queue)

    def owns(self, be) -> bool:
        """True when this object created ``be`` from a name (and so closes it)."""
        return id(be) in self._owned

    # -- the Backend surface the engine uses
    @property
    def name(self) -> str:
        return str(getattr(self.current, "name", type(self.current).__name__))

    @property
    def models(self):
        return getattr(self.current, "models", list(RUNTIME_MODELS))

    @property
    def providers(self):
        return getattr(self.current, "providers", [self.name])

    def precision(self, model_name: str) -> str:
        """What ``model_name`` runs in on the candidate in use now."""
        return self.current.precision(model_name)

    def run(self, model_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        while True:
            try:
                return self.current.run(model_name, inputs)
            except Exception as exc:
                failed = self.current
                self.failures.append((self.name, repr(exc)))
                if self.on_failure is not None:
                    self.on_failure(self.name, exc)
                nxt = self._next()
                self._close(failed)
                if nxt is None:
                    self.current = None
                    lines = [f"  {name}: {err}" for name, err in self.failures]
                    raise RuntimeError(
                        "every backend failed (fallback):\n" + "\n".join(lines)
                        + ("\n  not created:\n" + "\n".join(self.not_created)
                           if self.not_created else "")) from exc
                self.current = nxt

    def _close(self, be) -> None:
        if be is not None and id(be) in self._owned:
            self._owned.discard(id(be))
            try:
                be.close()
            except Exception:  # noqa: BLE001  (a dead device may fail to close as well)
                pass

    def close(self) -> None:
        """Close the backend in use if this object created it."""
        self._close(self.current)

    def __repr__(self) -> str:
        return f"FallbackBackend(current={self.name!r}, left={len(self._queue)})"
