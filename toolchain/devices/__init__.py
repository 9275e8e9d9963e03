"""What is known about a device without running anything on it: its profile (hardware facts
with sources, runtimes, protocol, budgets), the host's facts, and latency/memory predictors.

Measurement (runners, the agent) lives in :mod:`toolchain.profile`, above this package; a device
named by the user is resolved once into a :class:`toolchain.target.DeviceTarget`.
"""
