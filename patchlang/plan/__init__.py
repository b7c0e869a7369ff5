"""Planning: how a patch task becomes solver calls, as a chain of reductions and the drivers around it.

See :mod:`patchlang.plan.chain` for the order of the steps and docs/backends.md for what each does.
"""
