"""The API's request models and the engine's spec dataclasses name the same fields."""

from __future__ import annotations

from dataclasses import fields

import pytest

from app.schemas import RetrainSettings, SearchCreate, SearchKnobs, TrainSettings
from engine.spec import RetrainSpec, SearchSettings, SearchSpec, TrainSpec


@pytest.mark.parametrize(("model", "dataclass", "api_only"), [
    (SearchCreate, SearchSpec, {"queue"}), (TrainSettings, TrainSpec, set()),
    (SearchKnobs, SearchSettings, set()), (RetrainSettings, RetrainSpec, set())])
def test_fields_match_the_engine_spec(model, dataclass, api_only):
    assert set(model.model_fields) - api_only == {f.name for f in fields(dataclass)}


def test_defaults_round_trip_into_the_engine_spec():
    body = SearchCreate(arch="resnet18", dataset="digits", macs=["1.5G"])
    spec = SearchSpec.from_dict(body.model_dump(exclude={"queue"}))
    assert spec.macs == [1_500_000_000]
    assert spec.train == TrainSpec() and spec.search == SearchSettings() and spec.retrain == RetrainSpec()
