"""NAME:KEY=VALUE specs: values are typed by the config field they set."""

from __future__ import annotations

import math

import pytest

from cxrcl.errors import CxrclError
from cxrcl.methods.registry import method_config


def test_numbers_yaml_leaves_as_text_are_read_as_floats():
    # YAML 1.1 reads "1e-1" and "inf" as strings; a float field must still accept them
    assert method_config("spcl:temperature=1e-1")[1].temperature == pytest.approx(0.1)
    assert method_config("spcl:ratios=5e-1,5e-1")[1].ratios == (0.5, 0.5)
    with pytest.raises(CxrclError, match="keep_ratio"):
        method_config("sparsecontrast:keep_ratio=inf")


def test_text_for_a_number_is_refused_by_name():
    with pytest.raises(CxrclError, match="temperature"):
        method_config("spcl:temperature=warm")
    assert not math.isnan(method_config("spcl:temperature=0.2")[1].temperature)
