"""cli_flag: booleans as the bundle command line passes them."""

from __future__ import annotations

import pytest

from morphzoo.inference import cli_flag


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (1, True), (0, False), ("true", True), ("True", True),
                                             ("1", True), ("yes", True), ("false", False), ("False", False), ("0", False), ("", False), (None, False)])
def test_cli_flag(value, expected):
    assert cli_flag(value) is expected


def test_cli_flag_rejects_other_words():
    with pytest.raises(ValueError, match=r"--ellipse_mask: expected true or false, got 'maybe'"):
        cli_flag("maybe", "ellipse_mask")
