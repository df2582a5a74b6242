"""Validation of Kubeflow Trainer objects against the CRD schemas of its v2.3.0 release,
vendored in tests/fixtures/trainer-crds/ (kubernetes-validate knows only built-in kinds).

Each ``<Kind>.v1alpha1.json`` is the ``openAPIV3Schema`` of that version from
kubeflow/trainer's ``manifests/base/crds/trainer.kubeflow.org_<plural>.yaml`` at tag v2.3.0
(commit 658725bdae5c7e3a0854d93ac6ff492e109a22ab) with every ``description`` removed (the
only change; Apache-2.0, LICENSE beside them). Validation is strict: an object schema that lists
its properties refuses others (as ``kubectl --validate=strict``), unless it preserves unknown
fields.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema

CRDS = Path(__file__).parent / "fixtures" / "trainer-crds"


def strict(schema):
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    crd = json.loads((CRDS / f"{kind}.v1alpha1.json").read_text())
    return jsonschema.Draft7Validator(strict(crd["openAPIV3Schema"]))


def errors(doc: dict) -> list[str]:
    """The schema errors of a TrainJob or TrainingRuntime (empty when it validates)."""
    assert doc["apiVersion"] == "trainer.kubeflow.org/v1alpha1", doc["apiVersion"]
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator(doc["kind"]).iter_errors(doc)]
