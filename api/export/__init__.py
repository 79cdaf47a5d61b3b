"""Exports of a job to experiment trackers (MLflow, TensorBoard); see :mod:`api.export.content`."""
