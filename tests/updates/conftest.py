"""Fixtures for the update lifecycle: real signed media, a trusted appliance, real users."""

from __future__ import annotations

import dataclasses

import pytest

from appliance.settings import ApprovalPolicy, EvaluationGates
from tests.updates.kit import GATES, build_media


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    return build_media(tmp_path_factory.getbasetemp())


@pytest.fixture
def app(appliance):
    """The test appliance with evaluation gates configured (as a quality unit would)."""
    appliance.settings = dataclasses.replace(appliance.settings,
                                             evaluation=EvaluationGates(**GATES))
    return appliance


@pytest.fixture
def security(make_user):
    return make_user(["security"], "sam")


@pytest.fixture
def itop(make_user):
    return make_user(["it"], "ivan")


@pytest.fixture
def admin2(make_user):
    return make_user(["admin"], "bea", "Bea Second")


@pytest.fixture
def two_admins(app):
    app.settings = dataclasses.replace(app.settings,
                                       approval=ApprovalPolicy(required_admin_signatures=2))
    return app
