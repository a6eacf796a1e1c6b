"""Score schemes and their classes: MARCO's four (`marco4`) and Merck's ten (`merck10`),
with how each maps to the four-way classes and to ISPyB's auto-score classes."""

from __future__ import annotations

from typing import Any

from marco_svc.api.access import Permission, guarded
from marco_svc.api.params import ApiBlueprint
from marco_svc.api.problems import Problem, problem_doc
from marco_svc.api.shapes import SchemeShape, SchemesList
from marco_svc.ispyb import ISPYB_CLASSES
from marco_svc.labels import CRYSTAL_CLASSES_10, CRYSTALS, MARCO4, SCHEMES, TEN_TO_FOUR

blueprint = ApiBlueprint("schemes", __name__, description="Score schemes and classes")


def _scheme(name: str) -> dict[str, Any]:
    classes = list(SCHEMES[name])
    four = {label: label for label in classes} if name == MARCO4 else dict(TEN_TO_FOUR)
    return {
        "name": name,
        "classes": classes,
        "crystal_classes": [CRYSTALS] if name == MARCO4 else list(CRYSTAL_CLASSES_10),
        "four_way": four,
        "ispyb": dict(ISPYB_CLASSES),
    }


@blueprint.route("/schemas")
@guarded(blueprint, Permission.READ)
@blueprint.response(200, SchemesList)
def schemes() -> dict:
    """Every score scheme with its classes."""
    return {"schemes": [_scheme(name) for name in SCHEMES]}


@blueprint.route("/schemas/<name>")
@guarded(blueprint, Permission.READ)
@blueprint.response(200, SchemeShape)
@blueprint.alt_response(404, **problem_doc("no such scheme"))
def scheme(name: str) -> dict:
    """One score scheme."""
    if name not in SCHEMES:
        raise Problem(404, "Scheme not found", f"known schemes: {', '.join(SCHEMES)}")
    return _scheme(name)
