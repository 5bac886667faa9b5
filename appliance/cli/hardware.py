"""`appliance hw ...`: this host's GPUs, recording a reading, and which engine fits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import (
    JsonOpt,
    PasswordStdinOpt,
    ReadingOpt,
    UserOpt,
    emit,
    login,
    open_app,
    out_path,
    reading_source,
)
from appliance.hardware.nvml import replayed_note

app = typer.Typer(help="GPU inventory (NVML) and engine profile fit.", no_args_is_help=True)


def _inventory_text(inv) -> str:
    lines = [inv.summary()]
    # Said with and without a driver: a replayed "no NVIDIA driver found" used to read
    # exactly like this host's own answer.
    replayed = ["  " + replayed_note(inv.source).strip()] if inv.source != "nvml" else []
    if not inv.driver_found:
        lines += replayed
        lines.append(f"  ({inv.error})" if inv.error else "")
        lines.append("  The appliance still works; only CPU-capable profiles can be served.")
        return "\n".join(line for line in lines if line)
    if inv.cuda_driver_version:
        lines[0] += f", CUDA {inv.cuda_driver_version}"
    for g in inv.gpus:
        def opt(value, unit=""):
            return "n/a" if value is None else f"{value}{unit}"
        mig = "n/a" if g.mig_enabled is None else ("on" if g.mig_enabled else "off")
        lines.append(
            f"  [{g.index}] {g.name} {g.arch} {g.uuid}  "
            f"mem {g.memory_free_bytes / 2**30:.1f}/{g.memory_total_gib:.1f} GiB free  "
            f"temp {opt(g.temperature_c, ' C')}  util {opt(g.utilization_gpu_pct, '%')}  "
            f"ECC uncorrected {opt(g.ecc_volatile_uncorrected)}  MIG {mig}")
    return "\n".join(lines + replayed)


@app.command("show")
def show(
    ctx: typer.Context,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    reading: ReadingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the GPUs NVML reports; says plainly when there is no NVIDIA driver."""
    from appliance.services import hardware

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        inv = hardware.show(appl, session, reading_source(reading))
    emit(inv.to_dict(), as_json, _inventory_text(inv))


@app.command("record")
def record(
    ctx: typer.Context,
    out: Annotated[str, typer.Option("--out", metavar="<path>",
                                     help="New file to write the reading to (JSON).")],
    note: Annotated[str | None, typer.Option("--note", help="What machine this is.")] = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    reading: ReadingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write this host's GPU reading to a file (a fixture for tests and demos)."""
    from appliance.services import hardware

    where = out_path("--out", out)
    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        inv = hardware.record(appl, session, where, reading_source(reading), note)
    # A reading replayed with --reading is copied: not this host's, and said so.
    emit({"out": str(where), "summary": inv.summary(), "source": inv.source}, as_json,
         f"Reading written to {where}: {inv.summary()}{replayed_note(inv.source)}")


@app.command("fit")
def fit(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(
        help="A directory of engines (each subdirectory with profile.json and config.json).")],
    pin: Annotated[str | None, typer.Option("--pin", help="Use this profile id (admin).")
                   ] = None,
    trtllm: Annotated[list[str] | None, typer.Option(
        "--trtllm", help="TensorRT-LLM version(s) this appliance runs; engines built with "
        "another are refused. Unset: not checked.")] = None,
    user: UserOpt = None,
    password_stdin: PasswordStdinOpt = False,
    reading: ReadingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Choose the engine profile that fits this host and say why for every candidate."""
    from appliance.errors import HardwareRefused
    from appliance.services import hardware

    with open_app(ctx) as appl:
        session = login(ctx, appl, user, password_stdin)
        sel = hardware.fit(appl, session, path, pin, set(trtllm) if trtllm else None,
                           reading_source(reading))
    lines = [f"host: {sel.host}{sel.replayed}",
             f"chosen: {sel.chosen.id if sel.chosen else 'none'} ({sel.note})"]
    lines += [f"  {'fits' if c.fits else 'no  '}  {c.profile_id}: {c.reason}"
              for c in sel.candidates]
    emit(sel.to_dict(), as_json, "\n".join(lines))
    if not sel.ok:
        # The reasons are printed above. A pin that does not fit is no "no engine profile
        # fits" when others do, and "run `appliance hw fit`" sent people to this command.
        if sel.pinned and sel.fitting:
            raise HardwareRefused(sel.note, f"pin one that fits ({', '.join(sel.fitting)}), "
                                  "or leave out --pin; nothing was changed")
        raise HardwareRefused(f"no engine profile fits this host: {sel.note}",
                              "each profile's reason is listed above; nothing was changed")
