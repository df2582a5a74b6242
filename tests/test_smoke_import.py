import fdshpo


def test_public_names_are_exported():
    for name in ("Schedule", "hypergradient", "SignOptimizer"):
        assert hasattr(fdshpo, name), name
