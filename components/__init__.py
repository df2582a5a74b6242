"""KFP v2 components (installed as ``fdshpo.components``): thin adapters over the library.

One file per component. Each file holds the plain step function (``*_step``: typed Python,
used by the inline runner and by tests) and the component function (``*_component``: the KFP
lightweight component body, whose typed ``Input``/``Output`` artifacts and parameters KFP
sees; it imports fdshpo inside, calls the step and records provenance in artifact metadata).
``fdshpo.pipelines`` turns the component functions into components with the configured image.

    prepare  -> inner (one replica, ParallelFor) -> outer (sign update over Collected
    hypergradients) -> ... -> retrain (from scratch, test set) -> report
"""
