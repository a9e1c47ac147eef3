from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.helm import Helm, find_helm


@pytest.fixture(scope="session")
def helm_binary() -> str:
    return find_helm()


@pytest.fixture
def helm(helm_binary: str, tmp_path: Path) -> Helm:
    return Helm(helm_binary, tmp_path)
