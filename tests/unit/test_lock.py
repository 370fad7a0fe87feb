"""The lock files pin every dependency pyproject.toml declares, at versions it
allows, with hashes; the runtime lock agrees with the development one; the
environment ``make install`` made is the locked one; the image installs from it."""

from __future__ import annotations

import importlib.metadata as metadata
import re
import tomllib

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ehr_service.config import PROJECT_ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _lock(name: str) -> dict[str, tuple[str, Marker | None, int]]:
    """Package -> (version, marker, number of hashes)."""
    pins: dict[str, tuple[str, Marker | None, int]] = {}
    current = None
    for line in (PROJECT_ROOT / name).read_text().splitlines():
        match = PIN.match(line)
        if match:
            package, version, marker = match.groups()
            current = canonicalize_name(package)
            assert current not in pins, f"{name}: {package} pinned twice"
            pins[current] = (version, Marker(marker) if marker else None, 0)
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            version, marker, hashes = pins[current]
            pins[current] = (version, marker, hashes + 1)
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{name}: not a pinned requirement: {line!r}")
    return pins


def _declared() -> tuple[list[Requirement], list[Requirement]]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    dev = [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    return runtime, dev


def _extras_of(requirement: Requirement) -> list[Requirement]:
    """What an extra such as uvicorn[standard] brings (read from the installed metadata)."""
    out = []
    for text in metadata.requires(requirement.name) or ():
        extra = Requirement(text)
        for wanted in requirement.extras:
            if extra.marker is not None and extra.marker.evaluate({"extra": wanted}):
                out.append(extra)
    return out


def _covers(pins: dict[str, tuple[str, Marker | None, int]], req: Requirement) -> str | None:
    pinned = pins.get(canonicalize_name(req.name))
    if pinned is None:
        return f"{req} is not in the lock"
    if not req.specifier.contains(pinned[0], prereleases=True):
        return f"{req} is locked at {pinned[0]}, which it does not allow"
    return None


def test_every_declared_dependency_is_locked_at_an_allowed_version() -> None:
    runtime, dev = _declared()
    image, development = _lock("requirements.lock"), _lock("requirements-dev.lock")
    problems = []
    for requirement in runtime:
        for extra in [requirement, *_extras_of(requirement)]:
            problems += [f"requirements.lock: {p}" for p in [_covers(image, extra)] if p]
            problems += [f"requirements-dev.lock: {p}" for p in [_covers(development, extra)] if p]
    for requirement in dev:
        for extra in [requirement, *_extras_of(requirement)]:
            problems += [f"requirements-dev.lock: {p}" for p in [_covers(development, extra)] if p]
    assert not problems, problems
    for needed in ("lxml", "fastapi-offline"):  # runtime, so in the image
        assert needed in image
    assert development["fhirpy"][0] == "2.3.1" and development["fhirclient"][0] == "4.4.0"


def test_the_locks_agree_and_every_pin_has_hashes() -> None:
    image, development = _lock("requirements.lock"), _lock("requirements-dev.lock")
    assert len(image) >= 40 and set(image) <= set(development)
    assert {p: image[p][0] for p in image} == {p: development[p][0] for p in image}
    assert all(hashes for _, _, hashes in development.values())
    assert all(hashes for _, _, hashes in image.values())


def test_this_environment_is_the_locked_one() -> None:
    """``make install`` installs the development lock: what it pins for this machine
    is installed at exactly that version."""
    wrong = {}
    for package, (version, marker, _) in _lock("requirements-dev.lock").items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            wrong[package] = (version, installed)
    assert not wrong, wrong


def test_make_install_and_the_image_install_from_the_locks() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK)" in makefile and "LOCK := requirements-dev.lock" in makefile
    assert "--no-deps -e ." in makefile and "\nlock:" in makefile
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r /tmp/requirements.lock" in dockerfile
    assert "pip install --no-cache-dir --no-deps /wheels/*" in dockerfile
    assert "pip wheel --no-cache-dir --no-deps" in dockerfile
