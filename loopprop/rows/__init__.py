"""Plan rows -> kernel calls: one forward/backward pair of *row functions* per layer kind.

A row function reads layer ``r``'s offsets and integer settings from the plan
(:mod:`loopprop.plan`), takes its views of the flat buffers (:class:`loopprop.bundles.Flat`)
and calls the kind's kernels (:mod:`loopprop.kernels`). Every row function has the one
signature ``row(r, plan, fplan, b, s)`` (:func:`loopprop.bundles.row_signature`), so the epoch
calls them through a table indexed by kind code (:mod:`loopprop.dispatch`); each is compiled
separately, once per dtype, the first time a network needs its kind, and cached on its own.
The functions here are plain Python: :mod:`loopprop.dispatch` compiles them. The registry
(:mod:`loopprop.layers.registry`) pairs each kind's layer class with its rows.
"""
