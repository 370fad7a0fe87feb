"""How a name reads: Han script family then given with no space, other scripts
given then family with spaces, text as written, official or usual first."""

from __future__ import annotations

import pytest

from ehr_service.fhir.names import display_name


@pytest.mark.parametrize(
    ("names", "shown"),
    [
        ([{"family": "王", "given": ["芳"]}], "王芳"),
        ([{"family": "欧阳", "given": ["娜娜"]}], "欧阳娜娜"),
        ([{"family": "Hyatt", "given": ["Fletcher"]}], "Fletcher Hyatt"),
        ([{"family": "Conn", "given": ["Liz", "Ann"], "prefix": ["Mrs."]}], "Mrs. Liz Ann Conn"),
        ([{"family": "Chan", "given": ["Tai Man"], "suffix": ["Jr."]}], "Tai Man Chan Jr."),
        ([{"family": "王", "given": ["Fang"]}], "王 Fang"),  # mixed scripts stay apart
        ([{"text": "陈 大文 (Chan Tai Man)", "family": "陈"}], "陈 大文 (Chan Tai Man)"),
        (
            [
                {"use": "old", "family": "李", "given": ["四"]},
                {"use": "nickname", "given": ["Sam"]},
                {"use": "official", "family": "张", "given": ["三"]},
            ],
            "张三",
        ),
        ([{"use": "old", "family": "Old"}, {"given": ["New"], "family": "Name"}], "New Name"),
        (
            [{"use": "usual", "given": ["Fletcher"], "family": "Hyatt"}, {"family": "X"}],
            "Fletcher Hyatt",
        ),
        ([], None),
        (None, None),
        ([{"given": []}], None),
    ],
)
def test_display_name(names: object, shown: str | None) -> None:
    assert display_name(names) == shown
