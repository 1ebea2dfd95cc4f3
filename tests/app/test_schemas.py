"""The API's request models and the engine's spec dataclasses name the same fields."""

from __future__ import annotations

from dataclasses import fields

import pytest
from pydantic import ValidationError

from app import schemas
from app.schemas import SearchCreate
from app.spec_validation import FieldError, check_request_budgets, validated_spec
from engine.spec import RetrainSpec, SearchSettings, SearchSpec, TrainSpec
from store.settings import Settings


@pytest.mark.parametrize(
    ("model", "dataclass", "api_only"),
    [
        (SearchCreate, SearchSpec, {"queue"}),
        (schemas.TrainSpec, TrainSpec, set()),
        (schemas.SearchSettings, SearchSettings, set()),
        (schemas.RetrainSpec, RetrainSpec, set()),
    ],
)
def test_fields_match_the_engine_spec(model, dataclass, api_only):
    assert set(model.model_fields) - api_only == {f.name for f in fields(dataclass)}


def test_defaults_round_trip_into_the_engine_spec():
    body = SearchCreate(arch="resnet18", dataset="digits", macs=["1.5G"])
    spec = SearchSpec.from_dict(body.model_dump(exclude={"queue"}))
    assert spec.macs == [1_500_000_000]
    assert spec.train == TrainSpec() and spec.search == SearchSettings() and spec.retrain == RetrainSpec()


def test_budgets_may_be_shares_of_the_full_network():
    body = SearchCreate(arch="resnet18", dataset="digits", macs=["40%", "2M"], latency_ms=["50 %", 1.5], params=[1000])
    spec = SearchSpec.from_dict(body.model_dump(exclude={"queue"}))
    assert (spec.macs, spec.latency_ms, spec.params) == (["40%", 2_000_000], ["50%", 1.5], [1000])
    for field, bad in (("macs", "150%"), ("params", "0%"), ("latency_ms", "abc%"), ("macs", 0)):
        with pytest.raises(ValidationError, match=field):
            SearchCreate(arch="resnet18", dataset="digits", **{field: [bad]})


def test_a_share_below_the_smallest_configuration_names_the_field():
    body = SearchCreate(arch="resnet18", dataset="digits", input_size=16, width_mult=0.25, macs=["60%", "1%"])
    with pytest.raises(FieldError, match="below the smallest configuration") as err:
        check_request_budgets(body, num_classes=10)
    assert err.value.loc == ("body", "macs", 1)


def test_the_original_teacher_without_weights_names_the_field():
    body = SearchCreate(arch="resnet18", dataset="digits", macs=["50%"], train={"teacher": "original"})
    with pytest.raises(FieldError, match="give weights") as err:
        validated_spec(body, Settings())
    assert err.value.loc == ("body", "train", "teacher")
    with pytest.raises(ValidationError, match="teacher"):
        SearchCreate(arch="resnet18", dataset="digits", train={"teacher": "ema"})
