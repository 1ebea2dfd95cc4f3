"""``autoslim archs``, ``autoslim macs`` and ``autoslim export``: the model library from the shell."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archs", help="list the architectures")
    p.set_defaults(handler=cmd_archs)

    p = sub.add_parser("macs", help="print MACs (multiply-accumulates) and parameters")
    p.add_argument("arch", nargs="?", help="architecture (optional with --config)")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--config", type=Path, help="channel-config JSON; overrides the other options")
    p.add_argument("--json", action="store_true", help='print {"macs": int, "params": int}')
    p.set_defaults(handler=cmd_macs)

    p = sub.add_parser("export", help="write the slim model a channel config describes (.pt, .ts, .onnx)")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, help="supernet checkpoint to take the weights from")
    p.set_defaults(handler=cmd_export)


def cmd_archs(args: argparse.Namespace) -> int:
    from models import list_archs
    from models.zoo import external_names

    print("\n".join([*list_archs(), *external_names()]))
    return 0


def cmd_macs(args: argparse.Namespace) -> int:
    from models import ChannelConfig, build_supernet, count_macs, count_params

    if args.config is not None:
        config = ChannelConfig.load(args.config)
        if args.arch and args.arch != config.arch:
            raise ValueError(f"config is for {config.arch!r}, not {args.arch!r}")
        macs, params = config.macs, config.params
    elif args.arch:
        supernet = build_supernet(
            args.arch, num_classes=args.num_classes, input_size=args.input_size, width_mult=args.width_mult
        )
        macs, params = count_macs(supernet.space, supernet.widths), count_params(supernet.space, supernet.widths)
    else:
        raise ValueError("give an architecture or --config")
    if args.json:
        print(json.dumps({"macs": macs, "params": params}))
    else:
        print(f"MACs: {macs:,} ({macs / 1e6:.2f}M)\nparams: {params:,} ({params / 1e6:.3f}M)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from models import ChannelConfig
    from models.files import save_model, slim_from_config

    config = ChannelConfig.load(args.config)
    model = slim_from_config(config, args.checkpoint)
    path = save_model(model, args.out, config.net.input_size)
    print(f"wrote {path} ({config.arch}, {config.macs / 1e6:.2f}M MACs, {config.params / 1e6:.3f}M params)")
    return 0
