"""``phagoflow simulate``: a simulated Rosella plate export with its ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phagoflow.cli import common

HELP = "write a simulated Rosella plate export with ground truth"
DESCRIPTION = """
Simulate a Rosella plate as an Opera export (OUT/Images/...) plus ground-truth masks
OUT/truth/rRRcCCfFFpPP.tiff (0 background, 1 phagophore, 2 autolysosome) and true per-field counts
OUT/truth/counts.csv. Deterministic for a given seed.
"""


def add_parser(sub: Any) -> None:
    """Add ``simulate`` to the ``phagoflow`` sub-parsers ``sub``."""
    p = common.command(sub, "simulate", _cmd_simulate, help=HELP, description=DESCRIPTION)
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--wells", type=int, default=8, help="number of wells (default 8)")
    p.add_argument("--fields", type=int, default=4, help="fields per well (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--plate", default=None, help="plate id (default SIM<seed>)")
    p.add_argument(
        "--format",
        default="harmony5",
        choices=("harmony4", "harmony5", "harmony6", "harmony7", "flex"),
        help="export format (default harmony5: Index.idx.xml + TIFFs)",
    )
    p.add_argument(
        "--preset",
        default="normal",
        choices=("normal", "harder"),
        help="acquisition preset: normal, or harder (dimmer, uneven expression, more vignetting)",
    )
    p.add_argument(
        "--condition",
        default=None,
        metavar="NAME",
        help="instead of a preset: a plate of the stress suite's imaging condition NAME "
        "(phagoflow.core.stress, e.g. sparse_large, low_snr, elongated_clustered), rendered by "
        "the test protocol for --seed (training 100-199, validation 5000-5999, test 7000-7999) "
        "and written as a Harmony 5 export with OUT/truth/ masks",
    )
    _add_cells_and_screens(p.add_argument_group("cells and screens"))


#: The ``cells and screens`` options taking a value (all ``default=None``): flag, type, metavar,
#: help.
_SCREEN_OPTIONS: tuple[tuple[str, Any, str, str], ...] = (
    (
        "--effect",
        float,
        "F",
        "with --screen: phagophore-rate factor of positive controls and planted hits (3)",
    ),
    ("--planted", int, "N", "with --screen: planted hits (1)"),
    ("--controls", int, "N", "with --screen: negative and positive control wells, N of each (3)"),
    (
        "--doses",
        None,
        "C1,C2,...",
        "with --screen: a dose series of compound DOSE-1 at these µM (EC50 1 µM)",
    ),
    ("--well-sigma", float, "S", "log-normal s.d. of the per-well autophagy level (default 0.35)"),
    (
        "--plate-gradient",
        float,
        "G",
        "extra autophagy across the columns, x (1 + G x) (default 1; 0 for a flat plate)",
    ),
)


def _add_cells_and_screens(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--nuclear",
        action="store_true",
        help="add a Hoechst 33342 channel of the true nuclei (Harmony formats; per-cell readouts)",
    )
    g.add_argument(
        "--screen",
        action="store_true",
        help="write OUT/plate_map.csv: negative controls in the first wells (column by column), "
        "positive controls in the last, the rest samples, some of them planted hits",
    )
    for flag, kind, metavar, text in _SCREEN_OPTIONS:
        g.add_argument(flag, type=kind, default=None, metavar=metavar, help=text)


def _simulation_options(args: argparse.Namespace) -> dict[str, Any]:
    """``simulate_plate`` keywords from the simulate flags (pydantic checks the values)."""
    from phagoflow.core.simulate import NuclearStainParameters, ScreenDesign, SimulationParameters

    update = {
        k: v
        for k, v in (("well_level_sigma", args.well_sigma), ("plate_gradient", args.plate_gradient))
        if v is not None
    }
    params = SimulationParameters.preset(args.preset)
    if update:
        params = SimulationParameters.model_validate(params.model_dump() | update)
    screen_flags = (args.effect, args.planted, args.controls, args.doses)
    if not args.screen and any(v is not None for v in screen_flags):
        raise ValueError("--effect, --planted, --controls and --doses need --screen")
    design = None
    if args.screen:
        design_kw: dict[str, Any] = {"effect": args.effect, "n_planted": args.planted}
        if args.controls is not None:
            design_kw |= {"n_negative": args.controls, "n_positive": args.controls}
        if args.doses:
            design_kw["dose_concentrations_um"] = tuple(float(c) for c in args.doses.split(","))
        design = ScreenDesign(**{k: v for k, v in design_kw.items() if v is not None})
    return {
        "params": params,
        "nuclear": NuclearStainParameters() if args.nuclear else None,
        "screen": design,
    }


def _cmd_condition(args: argparse.Namespace) -> int:
    """``simulate --condition``: one protocol plate of a stress-suite condition as an export."""
    from phagoflow.core.protocol import PlateSpec, ProtocolError, render_plate, role_of_seed
    from phagoflow.core.protocol import write_export as write_stress_export
    from phagoflow.core.stress import CONDITIONS

    other = [f for f, v in _PRESET_ONLY.items() if getattr(args, v) not in (None, False)]
    if args.preset != "normal" or args.format != "harmony5" or other:
        bad = ", ".join([*(["--preset"] if args.preset != "normal" else []), *other])
        return common.fail(
            ValueError(f"--condition writes its own settings: drop {bad or '--format'}")
        )
    if args.condition not in CONDITIONS:
        return common.fail(
            ValueError(
                f"unknown condition {args.condition!r}; choose one of {', '.join(CONDITIONS)}"
            )
        )
    role = role_of_seed(args.seed)
    try:
        if role is None:
            raise ProtocolError(
                f"seed {args.seed} is in none of the protocol's ranges (training 100-199, "
                "validation 5000-5999, test 7000-7999)"
            )
        spec = PlateSpec(args.condition, role, args.seed, wells=args.wells, fields=args.fields)
        plate = render_plate(spec)
        export = write_stress_export(plate, args.out, plate_id=args.plate)
    except (ProtocolError, ValueError) as exc:
        return common.fail(exc)
    print(f"simulated {spec.name} plate: {len(plate.fields)} fields ({spec.variant} settings)")
    print(f"  export: {export}")
    print(f"  truth:  {Path(args.out) / 'truth'}")
    return 0


#: Options that only apply to preset plates, by flag: their ``args`` attribute.
_PRESET_ONLY: dict[str, str] = {
    "--nuclear": "nuclear",
    "--screen": "screen",
    **{flag: flag.removeprefix("--").replace("-", "_") for flag, *_ in _SCREEN_OPTIONS},
}


def _cmd_simulate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    if args.condition is not None:
        return _cmd_condition(args)

    from phagoflow.core.simulate import simulate_plate

    try:
        plate = simulate_plate(
            args.out,
            wells=args.wells,
            fields=args.fields,
            seed=args.seed,
            plate_id=args.plate,
            export_format=args.format,
            progress=common.progress(args),
            **_simulation_options(args),
        )
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return common.fail(ValueError(f"simulate: {bad}"))
    except ValueError as exc:
        return common.fail(exc)
    print(f"simulated plate {plate.plate_id}: {plate.n_fields} fields")
    print(f"  export: {plate.export_dir}")
    print(f"  truth:  {plate.truth_dir} (counts: {plate.counts_csv})")
    if plate.plate_map is not None:
        print(f"  plate map: {plate.plate_map}")
        from phagoflow.embedded.screen import planted_wells

        planted = planted_wells(plate.truth_dir / "wells.csv")
        print(f"  planted hits: {' '.join(planted) or 'none'}")
    return 0
