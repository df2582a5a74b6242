import fdshpo


def test_public_names_are_exported():
    for name in ("Schedule", "hypergradient", "SignOptimizer"):
        assert hasattr(fdshpo, name), name


def test_the_torch_floor_has_a_weights_only_load_that_holds():
    """Checkpoints and prepared bundles are read with ``torch.load(weights_only=True)``, which
    torch < 2.6 lets a crafted file bypass (remote code execution, CVE-2025-32434): the
    declared floor must exclude those versions."""
    from pathlib import Path

    from packaging.requirements import Requirement

    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli, the same parser (in the dev extras there)
        import tomli as tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                            .read_text())["project"]
    specs = {r.name: r.specifier for r in map(Requirement, project["dependencies"])}
    assert not specs["torch"].contains("2.5.1") and specs["torch"].contains("2.6.0")
    assert not specs["torchvision"].contains("0.20.1")  # the torchvision of torch 2.5
