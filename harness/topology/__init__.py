"""Topologies as data: the model (:mod:`.model`), YAML loading with file/path-naming errors
(:mod:`.schema`, :mod:`.load`), cross-field validation (:mod:`.validate`), and the stock presets
(``presets/*.yaml``).

Must not know: QEMU option syntax, SSH, the guest (the ids the harness keeps for its own QEMU objects,
which validation refuses, come from :mod:`harness.qemu.ids`). A ``Topology`` is plain frozen data;
its CXL port tree is :mod:`.cxltree`; device serials and pmem label areas (whether a
re-created persistent region finds its namespace) are :mod:`.labels`.
"""

from .load import Loaded, load, parse, preset_names, resolve
from .model import Topology

__all__ = ["Loaded", "Topology", "load", "parse", "preset_names", "resolve"]
