"""``gazerad export-bundle``: a trained model as a MONAI bundle (:mod:`gazerad.bundle.export`)."""

from __future__ import annotations

import argparse

from gazerad.cli._command import Command

__all__ = ["COMMANDS"]


def _add_export(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", required=True, help="attention.pt / kacl.pt / encoder.pt, its run folder, or a served model file (localization.pt, ...)")
    s.add_argument("--out", required=True, help="the bundle folder (new or empty unless --overwrite)")
    s.add_argument("--stats", default=None, help="the model's <name>.stats.json for the model card (default: next to the model file)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")


def _export(args: argparse.Namespace) -> int:
    from gazerad.bundle.export import export_bundle

    out = export_bundle(args.model, args.out, stats=args.stats, overwrite=args.overwrite)
    print(f"bundle -> {out} (python -m monai.bundle run --config_file {out}/configs/inference.json --bundle_root {out} --input_dir XRAYS --output_dir OUT)")
    return 0


COMMANDS = (Command("export-bundle", "export a trained model as a MONAI bundle (metadata, inference config, weights, model card)", _add_export, _export),)
