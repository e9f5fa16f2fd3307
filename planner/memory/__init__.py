"""The analytic memory model, one module per component; :mod:`planner.memory.estimate` assembles them."""
