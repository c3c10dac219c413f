"""
Print the installed versions that differ from the lock file, so that a failure of ``tox -e tests-latest`` names the
upstream releases it ran on: ``python requirements/newer_than_lock.py requirements/constraints.txt``.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement


def differences(lock_file: str) -> list[str]:
    """``name: locked X, installed Y`` for every locked package of this Python whose installed version differs."""
    lines = []
    for text in open(lock_file).read().splitlines():
        text = text.split("#")[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        locked = next(iter(requirement.specifier)).version
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            continue
        if installed != locked:
            lines.append(f"{requirement.name}: locked {locked}, installed {installed}")
    return lines


if __name__ == "__main__":
    changed = differences(sys.argv[1])
    print("Newer than the lock file:" if changed else "Every installed package has its locked version.")
    print("\n".join(f"  {line}" for line in changed))
