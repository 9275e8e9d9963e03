"""Measurement: latency and memory of a model run here (a fresh worker process) or on the device
through `edgec agent`, and the calibration of fitted predictors from such measurements.

Device facts and predictors live in :mod:`toolchain.devices`, below this package."""
