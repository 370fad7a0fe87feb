"""No container engine runs here: the Dockerfile is checked by reading it."""

from __future__ import annotations

import tomllib

from ehr_service.config import PROJECT_ROOT


def _instructions() -> list[tuple[str, str]]:
    text = (PROJECT_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    instructions = _instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and all("slim" in stage for stage in stages)
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
    (healthcheck,) = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    (entrypoint,) = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    command = entrypoint.strip('[]"').split('"')[0]
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command in scripts  # the entrypoint is the installed command
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert "EHR_" in env  # configured through EHR_* variables only
    runs = " ".join(rest for keyword, rest in instructions if keyword in {"RUN", "CMD"})
    assert "migrate" not in runs  # migrations are a separate command, not on start
