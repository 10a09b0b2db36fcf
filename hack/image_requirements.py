"""Print one extra's requirements from pyproject.toml, minus the packages an image already has.

The trainer image starts from TensorFlow's GPU image. Installing `.[trainer]` there would pull
`tensorflow-cpu` next to the base's `tensorflow`, and the two would overwrite each other's files.
So the Dockerfile installs our package with `--no-deps` and then the extra's other requirements,
listed by this script, which keeps pyproject.toml the only list of dependencies.

Runs on the image's own Python: tomllib from 3.11, else the tomli that pip vendors.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10 base images
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

# A requirement's distribution name: everything before a version, extra, marker or space.
NAME_PATTERN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement string."""
    match = NAME_PATTERN.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a package name from requirement {requirement!r}")
    return normalize(match.group(1))


def requirements(project: dict[str, Any], extras: list[str], exclude: set[str]) -> list[str]:
    """The core dependencies plus the named extras, without the excluded names, deduplicated."""
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise ValueError(f"unknown extras {unknown}; pyproject.toml has {sorted(optional)}")

    wanted = list(project.get("dependencies", []))
    for extra in extras:
        wanted += optional[extra]

    excluded = {normalize(name) for name in exclude}
    result: list[str] = []
    for requirement in wanted:
        if requirement_name(requirement) not in excluded and requirement not in result:
            result.append(requirement)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*", help="optional-dependency groups to include")
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME",
                        help="a distribution the image already provides (repeatable)")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)

    project = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))["project"]
    for requirement in requirements(project, args.extras, set(args.exclude)):
        sys.stdout.write(requirement + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
