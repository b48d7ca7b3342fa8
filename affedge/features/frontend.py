"""The bundle's record of its face front end (detector + crop recipe), and the check that this
install reproduces it.

Record (a JSON-able dict, e.g. a manifest section)::

    {"detector": "blazeface", "detector_sha256": "<sha256 of the model file or null>",
     "crop_recipe": "landmarks5-v1", "crop_recipe_version": 1}

A bundle without a record was trained on Haar box crops: :data:`LEGACY_FRONTEND`.
"""
from __future__ import annotations

from affedge.features.crops import CROP_RECIPES, get_recipe
from affedge.features.detectors.base import DEFAULT_DETECTOR

#: the front end of bundles that carry no record (the demo bundle: Haar boxes, box-v1 crops)
LEGACY_FRONTEND = {"detector": "haar", "detector_sha256": None, "crop_recipe": "box-v1",
                   "crop_recipe_version": 1}
_KEYS = ("detector", "detector_sha256", "crop_recipe", "crop_recipe_version")


def keypoints_missing(recipe: str, detector) -> bool:
    """True when crop ``recipe`` aligns on keypoints that ``detector`` (a registry name, class or
    instance) does not give."""
    if isinstance(detector, str):
        from affedge.features.detectors import DETECTORS

        detector = DETECTORS.get(detector)
    return get_recipe(recipe).needs_keypoints and not getattr(detector, "has_keypoints", False)


def detectors_with_keypoints() -> list[str]:
    """Registry names of the detectors that give the five face keypoints."""
    from affedge.features.detectors import DETECTORS

    return sorted(n for n, c in DETECTORS.items() if getattr(c, "has_keypoints", False))


def frontend_record(detector, recipe: str) -> dict:
    """The record of ``detector`` (a registry detector instance) cropping with ``recipe``."""
    r = get_recipe(recipe)
    name = getattr(detector, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"frontend_record: {type(detector).__name__} is not a registry detector "
                        f"(no name)")
    if keypoints_missing(recipe, detector):
        raise ValueError(f"crop recipe {recipe!r} needs keypoints; detector {name!r} has none "
                         f"(use 'box-v1')")
    return {"detector": name, "detector_sha256": getattr(detector, "model_sha256", None),
            "crop_recipe": r.name, "crop_recipe_version": r.version}


def frontend_of(manifest_section: dict | None) -> dict:
    """The record stored in a bundle (None: :data:`LEGACY_FRONTEND`), validated for shape."""
    if manifest_section is None:
        return dict(LEGACY_FRONTEND)
    if not isinstance(manifest_section, dict) or set(manifest_section) != set(_KEYS):
        raise ValueError(f"face front-end record must be a dict with keys {', '.join(_KEYS)}; "
                         f"got {manifest_section!r}")
    return dict(manifest_section)


def _check_names(rec: dict):
    from affedge.features.detectors import DETECTORS

    name, recipe = rec["detector"], rec["crop_recipe"]
    if name not in DETECTORS:
        raise ValueError(f"bundle front end: face detector {name!r} is not available here "
                         f"(known: {', '.join(sorted(DETECTORS))})")
    r = CROP_RECIPES.get(recipe)
    if r is None:
        raise ValueError(f"bundle front end: crop recipe {recipe!r} is not available here "
                         f"(known: {', '.join(sorted(CROP_RECIPES))})")
    if rec["crop_recipe_version"] != r.version:
        raise ValueError(f"bundle front end: crop recipe {recipe!r} version "
                         f"{rec['crop_recipe_version']} was used in training, this install has "
                         f"version {r.version}")
    if keypoints_missing(recipe, DETECTORS[name]):
        raise ValueError(f"bundle front end: recipe {recipe!r} needs keypoints, detector "
                         f"{name!r} has none")
    return DETECTORS[name]


def check_frontend(record: dict | None, detector=None) -> None:
    """Raise ValueError with the reason if this install cannot reproduce ``record``: unknown
    detector or crop recipe, another recipe version, or a model file whose sha256 differs.
    ``detector``: the instance that will run (default: the registry default of that name; a
    ``yunet`` record needs the instance, since yunet has no default model file)."""
    rec = frontend_of(record)
    cls = _check_names(rec)
    name = rec["detector"]
    if detector is not None:
        if getattr(detector, "name", None) != name:
            raise ValueError(f"bundle front end: trained with detector {name!r}, given "
                             f"{getattr(detector, 'name', type(detector).__name__)!r}")
        have = getattr(detector, "model_sha256", None)
    else:
        have = cls.default_model_sha256()
    if have != rec["detector_sha256"]:
        raise ValueError(f"bundle front end: detector {name!r} model sha256 {have} differs from "
                         f"the one used in training ({rec['detector_sha256']})")


def detector_from_record(record: dict | None, **options):
    """The detector a bundle's front end needs (None: :data:`LEGACY_FRONTEND`), built with
    ``options`` (``min_size``, ``providers``, ``model_path`` for yunet, ...) and checked against
    the record (ValueError with the reason when this install cannot reproduce it)."""
    from affedge.features.detectors import make_detector

    rec = frontend_of(record)
    _check_names(rec)  # fail before loading anything
    det = make_detector(rec["detector"], **options)
    check_frontend(rec, detector=det)
    return det


#: real Aff-Wild2 crops (the organisers' ``cropped_aligned``, landmark-aligned 112x112) are
#: closest to this front end of ours (see affedge/features/crops.py for what matches): the
#: landmark recipe with the default detector (it was the full-range model, whose recall on real
#: faces is 0.65 against the default's 0.985, so a bundle trained on Aff-Wild2 ran with the
#: weaker detector; both models give the same keypoints for the recipe)
AFFWILD2_FRONTEND = (DEFAULT_DETECTOR, "landmarks5-v1")


def dataset_frontend(root) -> dict:
    """The front end a data set's face crops were made with: ``synthetic.json``'s record for
    ``affedge synth`` data (legacy sets without one: Haar + box-v1), otherwise (Aff-Wild2's own
    aligned crops) the default detector + landmarks5-v1, the closest the runtime can reproduce."""
    import json
    from pathlib import Path

    meta = Path(root) / "synthetic.json"
    if meta.is_file():
        rec = (json.loads(meta.read_text()).get("crops") or {}).get("frontend")
        return frontend_of(rec)
    from affedge.features.detectors import make_detector

    return frontend_record(make_detector(AFFWILD2_FRONTEND[0]), AFFWILD2_FRONTEND[1])
