"""Warns when a recognizer runs what its bundle was not checked with: a precision that did not pass
the export parity check, or another face detector than the training crops came from."""
from __future__ import annotations

import warnings


def parity_problem(manifest: dict, precision: str | None) -> str | None:
    """Why the bundle's whole-pipeline parity record for ``precision`` ("int8", ...) is not a
    pass, or None (passed, or no record: nothing to say). ``affedge export`` scores the exported
    pipeline against the eager model on labelled clips (CCC) and marks a precision whose CCC
    moved by more than its threshold "report" rather than "pass"."""
    rec = pipeline_parity(manifest, precision)
    if rec is not None:
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


def pipeline_parity(manifest: dict, precision: str | None) -> dict | None:
    """The bundle's whole-pipeline parity record for ``precision``, or None."""
    return next((rec for rec in manifest.get("parity") or []
                 if rec.get("artifact") == "pipeline" and rec.get("precision") == precision),
                None)


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


def warn_other_detector(manifest: dict, name: str, stacklevel: int = 4) -> None:
    """One RuntimeWarning when ``name`` is not the detector of the bundle's face front end: the
    crops are framed differently from the training's, and the model's outputs move with the
    framing (demo bundle and clip, trained on blazeface-short crops: ``blazeface`` moved
    arousal by 0.19 on average and up to 0.70, and its CCC against the labels fell from 0.92
    to 0.83; a new-user trial, 2026-12-02, measured again here)."""
    trained = (manifest.get("face_frontend") or {}).get("detector")
    if trained and name != trained:
        warnings.warn(f"detector {name!r}: this bundle was trained on {trained!r} crops; another "
                      f"detector frames faces differently, which moves the predictions (on the "
                      f"demo clip, 'blazeface' for 'blazeface-short' moved arousal by 0.19 on "
                      f"average); leave the detector unset to use the bundle's",
                      RuntimeWarning, stacklevel=stacklevel)
