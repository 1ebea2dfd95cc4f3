"""Channel configs: JSON round trip, validation that names the offending layer, rebuilding the model."""

from __future__ import annotations

import json

import pytest
import torch

import models
from models import ChannelConfig, ConfigError


def test_round_trip_through_json(tiny_config):
    config, path = tiny_config("mobilenet_v2", seed=3)
    config.extra["budget"] = 1_000_000
    config.save(path)
    loaded = ChannelConfig.load(path)
    assert loaded == config
    assert json.loads(path.read_text())["channels"] == config.channels
    assert loaded.to_dict()["format"] == "autoslim.channel-config/1"


def test_macs_and_params_are_recomputed_not_trusted(tiny_config):
    config, path = tiny_config("resnet18")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "macs": 1, "params": 2}))
    loaded = ChannelConfig.load(path)
    assert (loaded.macs, loaded.params) == (config.macs, config.params) != (1, 2)


@pytest.mark.parametrize("arch", models.list_archs())
def test_build_from_config_has_the_configs_cost(arch):
    supernet = models.build_supernet(arch, num_classes=10, input_size=32, width_mult=0.5)
    widths = supernet.space.random(torch.Generator().manual_seed(4))
    config = ChannelConfig.from_dict(ChannelConfig.from_widths(supernet, widths).to_dict())
    slim = models.build(arch, channels=config)
    assert sum(p.numel() for p in slim.parameters()) == config.params == models.count_params(supernet.space, widths)
    assert slim(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    full = models.build(arch, num_classes=10, input_size=32, width_mult=0.5)
    assert sum(p.numel() for p in full.parameters()) == models.count_params(supernet.space, supernet.space.full())


def tied_pair(space) -> tuple[str, str]:
    """Two layers of one group (a residual or depthwise tie)."""
    group = next(g for g in space.groups.values() if len(g.layers) > 1)
    return group.layers[0], group.layers[1]


def set_group(data: dict, space, layer: str, count) -> dict:
    """``data`` with every layer of ``layer``'s group set to ``count`` (so no tie is broken)."""
    channels = dict(data["channels"])
    for name in space.groups[space.group_of(layer)].layers:
        channels[name] = count
    return {**data, "channels": channels}


@pytest.fixture
def valid(tiny_config):
    """A valid config document and the channel space it refers to."""
    config, _ = tiny_config("resnet18", width_mult=0.5)
    return config.to_dict(), models.Supernet(config.net).space


def test_rejects_unknown_layer(valid):
    data, _ = valid
    with pytest.raises(ConfigError, match=r"unknown layer 'layer9.conv1'"):
        ChannelConfig.from_dict({**data, "channels": {**data["channels"], "layer9.conv1": 8}})


def test_rejects_missing_layer(valid):
    data, _ = valid
    channels = dict(data["channels"])
    del channels["layer3.1.conv1"]
    with pytest.raises(ConfigError, match=r"layer 'layer3.1.conv1' has no channel count"):
        ChannelConfig.from_dict({**data, "channels": channels})


def test_rejects_count_breaking_a_tie(valid):
    data, space = valid
    first, second = tied_pair(space)
    group = space.groups[space.group_of(first)]
    channels = {**data["channels"], first: group.max, second: group.min}
    with pytest.raises(ConfigError, match=rf"layer '{second}' has {group.min} channels but must match"):
        ChannelConfig.from_dict({**data, "channels": channels})


@pytest.mark.parametrize("offset", ["above", "below"])
def test_rejects_count_outside_bounds(valid, offset):
    data, space = valid
    group = space.groups[space.group_of("layer4.0.conv1")]
    count = group.max + group.divisor if offset == "above" else group.min - group.divisor
    message = rf"layer 'layer4.0.conv1': {count} channels is outside \[{group.min}, {group.max}\]"
    with pytest.raises(ConfigError, match=message):
        ChannelConfig.from_dict(set_group(data, space, "layer4.0.conv1", count))


def test_rejects_count_off_the_divisor_grid(valid):
    data, space = valid
    group = space.groups[space.group_of("layer4.0.conv1")]
    with pytest.raises(ConfigError, match=r"layer 'layer4.0.conv1': \d+ channels is not a multiple of 8"):
        ChannelConfig.from_dict(set_group(data, space, "layer4.0.conv1", group.max - 3))


@pytest.mark.parametrize("count", [48.0, "48", True, None])
def test_rejects_non_integer_count(valid, count):
    data, space = valid
    with pytest.raises(ConfigError, match=r"layer 'layer4.0.conv1': channel count must be an integer"):
        ChannelConfig.from_dict(set_group(data, space, "layer4.0.conv1", count))


def test_rejects_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"arch": "resnet18", "channels": {')
    with pytest.raises(ConfigError, match="is not valid JSON"):
        ChannelConfig.load(path)
    path.write_text('[{"arch": "resnet18"}]')
    with pytest.raises(ConfigError, match="must be a JSON object"):
        ChannelConfig.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        ChannelConfig.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="cannot be read"):
        ChannelConfig.load(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arch": "vgg16"}, "unknown architecture 'vgg16'"),
        ({"arch": None}, "no 'arch'"),
        ({"channels": {}}, "no 'channels'"),
        ({"width_mult": -1.0}, "no buildable network"),
        ({"divisor": 0}, "no buildable network"),
        ({"input_size": "large"}, "no buildable network"),
    ],
)
def test_rejects_unbuildable_network(valid, change, message):
    data, _ = valid
    with pytest.raises(ConfigError, match=message):
        ChannelConfig.from_dict({**data, **change})


def test_build_rejects_a_config_of_another_arch(valid):
    data, _ = valid
    with pytest.raises(ConfigError, match="config is for 'resnet18', not 'resnet50'"):
        models.build("resnet50", channels=ChannelConfig.from_dict(data))


def test_net_spec_round_trip():
    spec = models.NetSpec("mobilenet_v2", num_classes=7, input_size=64, width_mult=1.5, switches=(0.25, 0.5))
    assert models.NetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
