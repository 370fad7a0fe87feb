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
    assert "/readyz" in healthcheck and "EHR_PORT" in healthcheck  # ready, on its port
    volumes = " ".join(rest for keyword, rest in instructions if keyword == "VOLUME")
    assert "/var/lib/ehr-service" in volumes  # the data directory (database file, keys)
    (entrypoint,) = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    command = entrypoint.strip('[]"').split('"')[0]
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command in scripts  # the entrypoint is the installed command
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert "EHR_" in env  # configured through EHR_* variables only
    runs = " ".join(rest for keyword, rest in instructions if keyword in {"RUN", "CMD"})
    assert "migrate" not in runs  # migrations are a separate command, not on start


def test_the_build_context_leaves_out_keys_data_and_the_environment() -> None:
    ignored = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "data", ".git", "**/keys", "*.sqlite3"} <= ignored
    copied = [rest.split()[0] for keyword, rest in _instructions() if keyword == "COPY"]
    assert all(source.rstrip("/") not in ignored for source in copied if "--from" not in source)
