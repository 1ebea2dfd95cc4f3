"""Channel configs: the JSON document a search produces and a user downloads.

A config names the network (architecture, input size, classes, width multiplier of the supernet,
divisor, lower width bound) and the output channels of every prunable layer by module name, plus
its MACs, params and measured accuracy.  The same file rebuilds the slim model
(``models.build(config.arch, channels=config)``).  Loading validates it against the traced channel
space, so a bad file fails with a message naming the layer instead of a shape error later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.counting import count_macs, count_params
from models.supernet import NetSpec, Supernet

FORMAT = "autoslim.channel-config/1"


class ConfigError(ValueError):
    """A channel config that cannot describe a network (malformed JSON, unknown layer, ...)."""


@dataclass
class ChannelConfig:
    net: NetSpec
    channels: dict[str, int]
    macs: int
    params: int
    accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.net.arch

    @classmethod
    def from_widths(
        cls, supernet: Supernet, widths: dict[str, int], accuracy: float | None = None, **extra: Any
    ) -> ChannelConfig:
        """Describe ``supernet`` at group ``widths``; MACs and params are counted exactly."""
        space = supernet.space
        return cls(
            supernet.spec,
            space.to_layers(widths),
            count_macs(space, widths),
            count_params(space, widths),
            accuracy,
            dict(extra),
        )

    def widths(self, supernet: Supernet) -> dict[str, int]:
        """Group widths for ``supernet`` (raises ConfigError naming the offending layer)."""
        try:
            return supernet.space.from_layers(self.channels)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **self.net.to_dict(),
            "channels": self.channels,
            "macs": self.macs,
            "params": self.params,
            "accuracy": self.accuracy,
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any) -> ChannelConfig:
        """Parse and validate; MACs and params are recomputed, never trusted from the file."""
        if not isinstance(data, dict):
            raise ConfigError("a channel config must be a JSON object")
        if not isinstance(data.get("arch"), str):
            raise ConfigError("config has no 'arch'")
        channels = data.get("channels")
        if not isinstance(channels, dict) or not channels:
            raise ConfigError("config has no 'channels' object")
        try:
            supernet = Supernet(NetSpec.from_dict(data))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"config describes no buildable network: {err}") from None
        known = set(NetSpec.__dataclass_fields__) | {"format", "channels", "macs", "params", "accuracy"}
        extra = {k: v for k, v in data.items() if k not in known}
        config = cls(supernet.spec, dict(channels), 0, 0, data.get("accuracy"), extra)
        widths = config.widths(supernet)
        config.macs = count_macs(supernet.space, widths)
        config.params = count_params(supernet.space, widths)
        return config

    @classmethod
    def load(cls, path: str | Path) -> ChannelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as err:
            raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
        return cls.from_dict(data)
