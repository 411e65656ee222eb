"""The ids the harness gives QEMU objects itself, and the prefixes a topology's ids may not use.

Kept apart from the option syntax (:mod:`.options`) so that topology validation, which refuses
these prefixes in a user's ids, reads them without knowing how an option is written. Pure data.
"""

from __future__ import annotations

#: Memory backends the argv generator adds for nodes and CXL devices (``hmem-node0``, ...).
BACKEND_PREFIX = "hmem-"
#: The serial console's chardev, the QMP monitor's chardev and the user-mode network.
CONSOLE_ID = "hcon0"
QMP_ID = "hqmp0"
NET_ID = "hnet0"
#: A topology id starting with one of these could collide with an id above.
RESERVED_ID_PREFIXES = (BACKEND_PREFIX, CONSOLE_ID[:-1], QMP_ID[:-1], NET_ID[:-1])
