"""Z3 encodings of the artifacts and of the source semantics (DESIGN.md §5).

This package is the only place that imports z3 (claripy's rule, STYLE.md): domain types elsewhere
know nothing of the solver.
"""
