"""The platform layer: the only place that asks which OS it is on."""
