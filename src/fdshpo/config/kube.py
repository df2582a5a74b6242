"""Kubernetes values an experiment config carries, validated before anything is compiled.

The ``resources:`` section of a config (:mod:`fdshpo.config.experiment`) names Kubernetes objects
and
quantities: CPU and memory quantities (``"500m"``, ``"16Gi"``), a node selector (label ->
value), tolerations (``{key, operator, value, effect, toleration_seconds}``) and the Secret that
holds the store keys. Each function here takes the raw YAML value and returns it normalised, or
raises :class:`~fdshpo.errors.UserError` naming the key and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import UserError

TOLERATION_KEYS = ("key", "operator", "value", "effect", "toleration_seconds")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
#: Secret keys KFP's MinIO secret uses, mapped to the environment variables the store reads.
SECRET_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}

_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_QUANTITY_EXAMPLES = {"cpu": '"4" or "500m"', "memory": '"16G" or "8Gi"'}


def quantity(value: Any, key: str) -> str | None:
    """A resource quantity as a string (numbers are accepted: 4 -> "4"); None stays None.

    Raises:
        UserError: ``resources.KEY must be a Kubernetes quantity such as ...``.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _QUANTITY.match(value):
        example = _QUANTITY_EXAMPLES.get(key, '"4" or "16Gi"')
        raise UserError(f"resources.{key} must be a Kubernetes quantity such as {example}, "
                        f"got {value!r}")
    return value


def node_selector(value: Any) -> dict[str, str]:
    """Label -> value, values as strings; None is ``{}``."""
    value = {} if value is None else value
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool))
            for k, v in value.items()):
        raise UserError("resources.node_selector must map label names to values, e.g. "
                        "{cloud.google.com/gke-accelerator: nvidia-tesla-a100}")
    return {k: str(v) for k, v in value.items()}


def tolerations(value: Any) -> list[dict]:
    """A list of toleration mappings (keys from :data:`TOLERATION_KEYS`); None is ``[]``."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise UserError("resources.tolerations must be a list of mappings with keys "
                        f"{', '.join(TOLERATION_KEYS)}")
    out = []
    for i, t in enumerate(value):
        unknown = sorted(str(k) for k in t if k not in TOLERATION_KEYS)
        if unknown:
            raise UserError(f"resources.tolerations[{i}]: unknown key(s) {unknown}; allowed: "
                            f"{', '.join(TOLERATION_KEYS)}")
        if t.get("operator", "Equal") not in ("Equal", "Exists"):
            raise UserError(f"resources.tolerations[{i}].operator must be Equal or Exists, got "
                            f"{t['operator']!r}")
        if t.get("effect") not in (None, *TOLERATION_EFFECTS):
            raise UserError(f"resources.tolerations[{i}].effect must be "
                            f"{', '.join(TOLERATION_EFFECTS[:-1])} or {TOLERATION_EFFECTS[-1]}, "
                            f"got {t['effect']!r}")
        out.append(dict(t))
    return out
