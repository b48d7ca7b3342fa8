"""Training data: the Aff-Wild2 VA reader, the synthetic generator, windows, folds, statistics.

Import the submodules directly (``affedge.training.data.affwild2`` etc.); this package imports
nothing heavy.
"""
