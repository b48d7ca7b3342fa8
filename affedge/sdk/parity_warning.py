"""Warns when a recognizer runs a precision that did not pass its bundle's export parity check."""
from __future__ import annotations

import warnings


def parity_problem(manifest: dict, precision: str | None) -> str | None:
    """Why the bundle's whole-pipeline parity record for ``precision`` ("int8", ...) is not a
    pass, or None (passed, or no record: nothing to say). ``affedge export`` scores the exported
    pipeline against the eager model on labelled clips (CCC) and marks a precision whose CCC
    moved by more than its threshold "report" rather than "pass"."""
    for rec in manifest.get("parity") or []:
        if rec.get("artifact") != "pipeline" or rec.get("precision") != precision:
            continue
        if rec.get("status") == "pass":
            return None
        ccc = rec.get("ccc") or {}
        delta, thr = ccc.get("max_delta"), rec.get("threshold")
        by = f" (CCC moved by {delta:.3f}" + (f", threshold {thr:g})" if thr else ")") \
            if isinstance(delta, (int, float)) else ""
        return (f"the bundle's {precision} model did not pass its export parity check{by}: "
                f"its outputs differ from the fp32 model's more than the bundle allows "
                f"(status {rec.get('status')!r}; fp32 is the checked precision)")
    return None


def warn_if_unchecked(manifest: dict, backend, stacklevel: int = 3) -> None:
    """One RuntimeWarning with :func:`parity_problem`'s reason for the precision ``backend``
    runs the encoder in, if there is one."""
    try:
        precision = str(backend.precision("encoder"))
    except Exception:  # noqa: BLE001  (a caller's backend object without precision())
        return
    why = parity_problem(manifest, precision)
    if why is not None:
        warnings.warn(why, RuntimeWarning, stacklevel=stacklevel)
