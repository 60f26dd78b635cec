"""Explicit-loop kernels, one module per layer family (docs/formulas.md has a section for each).

Each module pairs private compiled kernels (``_name(out..., in...)``, writing into arrays they are
given) with the public function beside them that validates, allocates and returns fresh arrays.
Nothing here imports the network, training or CLI code.
"""
