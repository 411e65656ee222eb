"""The nightly CI matrix: which topologies run on which kernels, on which accelerator.

Owns: the matrix as data (``matrix.yaml``, shipped in the package), its checks and cells
(:mod:`.matrix`: pure), and running cells as pytest runs (:mod:`.nightly`: subprocesses, one
output folder per cell with JUnit, the HTML report and failure bundles, and a markdown summary).

Must not know: the pytest plugin's insides (a cell is a ``pytest`` command line and the files it
writes), the terminal, SSH, QEMU.
"""
