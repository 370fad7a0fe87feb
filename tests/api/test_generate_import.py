"""`ehr-service generate` (deterministic realistic records) and `ehr-service import`
(NDJSON and bundles; re-runs change nothing; bad lines reported, the rest goes on)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM, parse_id_number
from ehr_service.storage.tables import resource, resource_version


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _counts(services: Services) -> tuple[int, int]:
    with services.unit.read() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(resource)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(resource_version)).scalar_one(),
        )


def test_generated_records_are_deterministic_and_valid(tmp_path: Path) -> None:
    assert _run("generate", "--residents", "4", "--seed", "7", "--out", str(tmp_path / "a"))[0] == 0
    assert _run("generate", "--residents", "4", "--seed", "7", "--out", str(tmp_path / "b"))[0] == 0
    for file in (tmp_path / "a" / "ndjson").iterdir():
        assert file.read_bytes() == (tmp_path / "b" / "ndjson" / file.name).read_bytes()
    patients = [
        orjson.loads(line)
        for line in (tmp_path / "a" / "ndjson" / "Patient.ndjson").read_bytes().splitlines()
    ]
    assert len(patients) == 4
    for patient in patients:
        (number,) = [i["value"] for i in patient["identifier"] if i["system"] == ID_NUMBER_SYSTEM]
        parsed = parse_id_number(number)  # valid check character and birth date
        assert parsed.birth_date.isoformat() == patient["birthDate"]
        assert patient["name"][0]["family"]
    _run("generate", "--residents", "4", "--seed", "8", "--out", str(tmp_path / "c"))
    assert (tmp_path / "c" / "ndjson" / "Patient.ndjson").read_bytes() != (
        tmp_path / "a" / "ndjson" / "Patient.ndjson"
    ).read_bytes()


@pytest.fixture
def cli_env(services: Services, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Services:
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    return services


def test_import_is_idempotent_and_reports_bad_lines(cli_env: Services, tmp_path: Path) -> None:
    services = cli_env
    assert (
        _run("generate", "--residents", "3", "--out", str(tmp_path / "g"), "--no-bundles")[0] == 0
    )
    ndjson = tmp_path / "g" / "ndjson"
    total = sum(len(f.read_bytes().splitlines()) for f in ndjson.iterdir())
    errors = tmp_path / "errors.txt"
    code, out = _run("import", str(ndjson), "--errors", str(errors))
    assert code == 0, out
    assert f"{total} new, 0 changed, 0 unchanged, 0 failed" in out
    before = _counts(services)
    assert before[0] == total
    code, out = _run("import", str(ndjson), "--errors", str(errors))
    assert f"0 new, 0 changed, {total} unchanged" in out
    assert _counts(services) == before  # nothing written twice, not even a version
    # a changed result becomes its next version; bad lines are listed, the rest goes on
    lines = (ndjson / "Observation.ndjson").read_bytes().splitlines()
    changed = orjson.loads(lines[0])
    changed["valueQuantity"]["value"] = 99.9
    extra = tmp_path / "more.ndjson"
    extra.write_bytes(
        b"\n".join(
            [
                orjson.dumps(changed),
                b"{not json",
                b'{"resourceType": "Observation"}',
                orjson.dumps(changed | {"id": "new-one", "status": "nonsense"}),
            ]
        )
    )
    code, out = _run("import", str(extra), "--errors", str(errors))
    assert code == 1 and "0 new, 1 changed, 0 unchanged, 3 failed" in out
    listed = errors.read_text().splitlines()
    assert [line.split(":")[1] for line in listed] == ["2", "3", "4"]
    assert _counts(services) == (before[0], before[1] + 1)


def test_import_transaction_bundles(cli_env: Services, tmp_path: Path) -> None:
    assert _run("generate", "--residents", "2", "--out", str(tmp_path / "g"))[0] == 0
    bundles = tmp_path / "g" / "bundles"
    code, out = _run("import", str(bundles), "--errors", str(tmp_path / "e.txt"))
    assert code == 0, out
    patients, _ = _counts(cli_env)
    assert patients > 2


def test_parallel_import_orders_by_dependency_and_matches_sequential(
    cli_env: Services, tmp_path: Path
) -> None:
    """Two worker processes: institutions and residents land before the results that
    name them (no result is re-marked into a second version), bad lines are still
    reported, and a re-run changes nothing."""
    services = cli_env
    assert (
        _run("generate", "--residents", "6", "--out", str(tmp_path / "g"), "--no-bundles")[0] == 0
    )
    ndjson = tmp_path / "g" / "ndjson"
    total = sum(len(f.read_bytes().splitlines()) for f in ndjson.iterdir())
    (ndjson / "Broken.ndjson").write_bytes(b'{"resourceType": "Observation"}\n{oops\n')
    # Given results first: the import still writes Organization and Patient before them.
    given = [str(ndjson / "Observation.ndjson"), str(ndjson / "Broken.ndjson")] + [
        str(p) for p in sorted(ndjson.iterdir()) if p.stem not in {"Observation", "Broken"}
    ]
    errors = tmp_path / "errors.txt"
    code, out = _run("import", *given, "--errors", str(errors), "--workers", "2")
    assert code == 1, out
    assert f"{total} new, 0 changed, 0 unchanged, 2 failed" in out
    assert sorted(line.split(":")[1] for line in errors.read_text().splitlines()) == ["1", "2"]
    assert _counts(services) == (total, total)  # one version each: nothing re-marked
    with services.unit.read() as conn:
        contents = conn.execute(
            sa.select(resource.c.content).where(resource.c.res_type == "Observation")
        ).scalars()
        marked = sum(b"urn:ehr-service:recognition-mark" in bytes(c) for c in contents)
    assert marked > 0  # their institutions were there when they were written
    code, out = _run("import", *given, "--errors", str(errors), "--workers", "2")
    assert f"0 new, 0 changed, {total} unchanged, 2 failed" in out
    assert _counts(services) == (total, total)


def test_import_order_puts_consents_before_results(tmp_path: Path) -> None:
    """A refusal must be stored before the results it keeps from partners are
    queued for them, also when workers write files of one rank at once."""
    from ehr_service.interactions.importing import input_files

    for name in ("Observation", "Consent", "Patient", "Organization", "Encounter"):
        (tmp_path / f"{name}.ndjson").write_bytes(b"")
    assert [p.stem for p in input_files([tmp_path])] == [
        "Organization", "Patient", "Consent", "Encounter", "Observation",
    ]  # fmt: skip
