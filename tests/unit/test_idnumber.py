"""GB 11643 resident ID numbers: structure, check character, legacy upgrade, masks."""

from __future__ import annotations

from datetime import date

import pytest

from ehr_service.mpi.idnumber import (
    InvalidIdNumberError,
    check_character,
    mask,
    mask_candidates,
    parse_id_number,
)
from tests.helpers import make_id_number


def test_the_standard_example_is_valid() -> None:
    # The example printed in GB 11643-1999 (Beijing Chaoyang, 1949-12-31, female).
    number = parse_id_number("11010519491231002X")
    assert number.normalised == "11010519491231002X"
    assert number.birth_date == date(1949, 12, 31)
    assert number.sex == "female"
    assert not number.legacy


def test_lower_case_x_is_normalised() -> None:
    assert parse_id_number("11010519491231002x").normalised == "11010519491231002X"


def test_check_character_matches_the_printed_weights() -> None:
    for born in ("19900307", "20000229", "19491231", "20231001"):
        number = make_id_number(born=born)
        assert check_character(number[:17]) == number[17]
        assert parse_id_number(number).normalised == number


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("11010519491231002Y", "18 characters"),
        ("1101051949123100", "18 characters"),
        ("110105194912310021", "check character"),
        ("110105194902300028", "not a real date"),  # 30 February
        ("990105194912310028", "no province"),
        ("110000194912310028", "no city"),
        ("110105209912310028", "future"),
        ("11010519491231002X ", "18 characters"),
    ],
)
def test_invalid_numbers_say_why_and_never_echo_the_number(value: str, reason: str) -> None:
    with pytest.raises(InvalidIdNumberError) as raised:
        parse_id_number(value, today=date(2026, 11, 28))
    assert reason in str(raised.value)
    assert value.strip()[:12] not in str(raised.value)


def test_wrong_check_character_of_an_otherwise_valid_number() -> None:
    number = make_id_number()
    wrong = number[:17] + ("0" if number[17] != "0" else "1")
    with pytest.raises(InvalidIdNumberError, match="check character"):
        parse_id_number(wrong)


def test_fifteen_digit_legacy_number_is_upgraded() -> None:
    upgraded = parse_id_number("110105491231002")
    assert upgraded.legacy
    assert upgraded.normalised == "11010519491231002X"
    assert upgraded.birth_date == date(1949, 12, 31)


def test_fifteen_digit_number_with_impossible_date() -> None:
    with pytest.raises(InvalidIdNumberError, match="date"):
        parse_id_number("110105491331002")


def test_sex_digit() -> None:
    assert parse_id_number(make_id_number(sequence="123")).sex == "male"
    assert parse_id_number(make_id_number(sequence="124")).sex == "female"


def test_masks() -> None:
    assert mask("50010119900307123X") == "5001**********123X"
    assert mask("110105491231002") == "1101*******1002"
    number = make_id_number()
    text = f"ID {number}, phone 13800000001, order 12345678901234567890"
    masked = mask_candidates(text)
    assert number not in masked
    assert mask(number) in masked
    assert "13800000001" in masked and "12345678901234567890" in masked
