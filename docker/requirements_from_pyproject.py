"""Write the project's runtime dependencies from pyproject.toml as a requirements file.

The image's dependency layer is built from this output plus ``-c requirements/constraints.txt``
before the source is copied, so editing the source does not reinstall torch.

    python docker/requirements_from_pyproject.py pyproject.toml            # all dependencies
    python docker/requirements_from_pyproject.py pyproject.toml --only torch  # names torch*
"""

from __future__ import annotations

import argparse
import re
import sys

import tomllib


def dependencies(pyproject: str, only: str | None = None) -> list[str]:
    with open(pyproject, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    if only is None:
        return list(deps)
    return [d for d in deps if re.match(r"[A-Za-z0-9._-]+", d).group(0).startswith(only)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--only", help="keep only the distributions whose name starts with this")
    args = parser.parse_args(argv)
    deps = dependencies(args.pyproject, args.only)
    if not deps:
        print(f"no dependencies matched in {args.pyproject}", file=sys.stderr)
        return 1
    sys.stdout.write("".join(d + "\n" for d in deps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
