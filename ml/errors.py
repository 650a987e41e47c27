"""Errors of the ``ml`` package.

    ParomaError
    └── MLError
        ├── ScanInvalid       a scan is not a usable 3D CT volume (shape, spacing)
        ├── LabelsInvalid     a label map is unusable (shape, no myocardium, no LV,
        │                     myocardium in pieces)
        ├── LVNotFound        segmentation of a scan found no left ventricle
        ├── WeightsInvalid    weights bytes or tensors are malformed (NaN, inf,
        │                     shape or name mismatch, not safetensors)
        └── CheckpointInvalid a training checkpoint is incomplete or inconsistent

Messages name the input and what was expected; they never carry a patient
identifier (callers pass case ids only to the ``on_read`` hook, never to errors).
"""

from __future__ import annotations

from common.errors import ParomaError


class MLError(ParomaError):
    """Any error of the ``ml`` package."""


class ScanInvalid(MLError):
    """A scan is not a usable 3D CT volume."""


class LabelsInvalid(MLError):
    """A label map cannot be measured."""


class LVNotFound(MLError):
    """No left ventricle (blood pool and myocardium) was found in a scan."""


class WeightsInvalid(MLError):
    """Model weights are malformed or do not fit the model."""


class CheckpointInvalid(MLError):
    """A training checkpoint is missing a part or does not fit the trainer."""
