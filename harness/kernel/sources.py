"""Compatibility: the kernel sources, re-exported from where they now live.

``harness.kernel.model`` (Kernel), ``.config`` (.config parsing and checks),
``.debian`` (the default kernel), ``.user`` (a user's bzImage or build tree),
``.tools`` (host tools, cached trees). New code imports from those.
"""

from __future__ import annotations

from harness.kernel.config import check_config, describe_missing, missing_options, parse_config, read_config
from harness.kernel.debian import (
    default_kernel,
    os_release,
    parse_apt_depends,
    pick_kernel_package,
    resolve_kernel_package,
)
from harness.kernel.model import Kernel, Progress
from harness.kernel.tools import decompress_modules, run_depmod
from harness.kernel.user import (
    kernel_from_tree,
    parse_bzimage_release,
    read_bzimage_release,
    tree_cache_key,
    user_kernel,
)

__all__ = ["Kernel", "Progress", "check_config", "describe_missing", "missing_options", "parse_config", "read_config",
           "default_kernel", "os_release", "parse_apt_depends", "pick_kernel_package", "resolve_kernel_package",
           "decompress_modules", "run_depmod", "kernel_from_tree", "parse_bzimage_release", "read_bzimage_release",
           "tree_cache_key", "user_kernel"]
