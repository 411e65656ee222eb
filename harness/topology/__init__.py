"""Topologies as data: the model, its loader and its validation."""

from .load import Loaded, load, parse, preset_names, resolve
from .model import Topology

__all__ = ["Loaded", "Topology", "load", "parse", "preset_names", "resolve"]
