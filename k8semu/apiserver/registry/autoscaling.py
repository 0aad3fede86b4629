"""HorizontalPodAutoscaler: Kubernetes' defaults and checks (k8semu.api.autoscaling) as a
registry row's hooks, so a bad HPA is refused at the API with its field named instead of
being stored and only reported by the controller's conditions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from k8semu.api import autoscaling
from k8semu.apiserver.validation import FieldError

defaults = autoscaling.default_hpa


def validate(obj: Any) -> Iterator[FieldError]:
    for path, message in autoscaling.validate_hpa(obj):
        yield FieldError(path, message)
