"""Shared fixtures: parametrization over the tiny zoo and the default decodings."""

from __future__ import annotations

import pytest
from _records import DECODINGS

from ppinvariants.zoo import ARCHITECTURES


@pytest.fixture(params=ARCHITECTURES)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=sorted(DECODINGS))
def decoding_name(request: pytest.FixtureRequest) -> str:
    return request.param
