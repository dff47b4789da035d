"""``privpix weights``: list, fetch, verify, import, path and info for pretrained checkpoints.

Thin commands over :mod:`privacy_cli.weights`: human output (Rich) or ``--json`` on stdout,
errors and hints as one line on stderr, exit code 0 (all good), 1 (some item failed), 2 (usage).
Mounted by the root app as ``privpix weights``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ..errors import PrivpixError, UsageError

app = typer.Typer(
    name="weights",
    help="Pretrained weights: list what privpix knows, fetch, verify, import your own copy, show paths.",
    no_args_is_help=True,
    add_completion=False,
)

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Machine-readable JSON on stdout (errors stay on stderr).")
]
WeightsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights-dir",
        help="Weights directory \\[default: $PRIVPIX_WEIGHTS_DIR or ~/.cache/privpix/weights].",
        show_default=False,
    ),
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never download (same as HF_HUB_OFFLINE=1).")]


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _fail(e: PrivpixError) -> NoReturn:
    _err(f"privpix: error: {e}")
    raise typer.Exit(e.exit_code)


def _entries(names: list[str] | None, all_: bool, what: str) -> list[Any]:
    from ..weights import get_weights, list_weights

    if all_ and names:
        raise UsageError(f"give weights names or --all, not both ({what})")
    if all_:
        return list_weights()
    if not names:
        raise UsageError(f"name the weights to {what}, or pass --all (see `privpix weights list`)")
    return [get_weights(n) for n in names]


# ---------------------------------------------------------------------------------------------


@app.command("list")
def list_cmd(json_: JsonOpt = False, weights_dir: WeightsDirOpt = None) -> None:
    """List every checkpoint privpix knows with size, licence and local status.

    Status: missing, cached (present, digest not checked against a pin yet), verified (digest
    matches weights.toml), mismatch.

    Examples:
      privpix weights list
      privpix weights list --json
    """
    from ..weights import list_weights, local_status

    try:
        rows = []
        for e in list_weights():
            st = local_status(e, weights_dir)
            rows.append(
                {
                    "name": e.name,
                    "used_by": list(e.used_by),
                    "size": e.size or None,
                    "size_text": e.size_text,
                    "licence": e.licence,
                    "restricted": e.restricted,
                    "format": e.format,
                    "source": e.origin,
                    **st,
                }
            )
    except PrivpixError as err:
        _fail(err)
    if json_:
        _echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="privpix weights", show_lines=False)
    # names never wrap (a wrapped name breaks copy-paste); the other columns fold instead
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in rows) if rows else 4)
    for col in ("used by", "size", "licence", "status"):
        table.add_column(col, overflow="fold")
    styles = {"missing": "dim", "cached": "yellow", "verified": "green", "mismatch": "bold red"}
    for r in rows:
        licence = r["licence"] + (" [restricted]" if r["restricted"] else "")
        status = f"[{styles.get(r['status'], '')}]{r['status']}[/]"
        table.add_row(r["name"], ", ".join(r["used_by"]), r["size_text"], licence, status)
    Console().print(table)


@app.command("fetch")
def fetch_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Weights names (see `privpix weights list`).", show_default=False),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Fetch every downloadable checkpoint.")] = False,
    accept_license: Annotated[
        bool,
        typer.Option(
            "--accept-license", help="Accept restricted (e.g. non-commercial) licences shown before download."
        ),
    ] = False,
    json_: JsonOpt = False,
    weights_dir: WeightsDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Download checkpoints (Hub -> Hugging Face cache, urls -> weights dir) and verify their sha256.

    Files already present are verified, not downloaded again. Unpinned downloads print their
    digest so it can be pinned in weights.toml.

    Examples:
      privpix weights fetch big-lama facenet-vggface2
      privpix weights fetch stylegan2-ffhq --accept-license
      privpix weights fetch --all --json
    """
    from ..weights.resolve import licence_text, resolve

    try:
        entries = _entries(names, all_, "fetch")
    except PrivpixError as err:
        _fail(err)

    def confirm(entry: Any) -> bool:
        _err(f"licence: {licence_text(entry)}")
        if accept_license:
            return True
        if sys.stdin.isatty():
            return typer.confirm(f"Accept these terms and download {entry.name}?", default=False, err=True)
        return False

    records, failed = [], 0
    for e in entries:
        if all_ and e.source_kind == "manual":
            records.append(
                {"name": e.name, "status": "import-only", "hint": f"privpix weights import {e.name} FILE"}
            )
            continue
        try:
            res = resolve(e, weights_dir=weights_dir, offline=offline or None, confirm=confirm, notify=_err)
            rec = {**res.to_json(), "status": "downloaded" if res.downloaded else "present"}
        except PrivpixError as err:
            failed += 1
            rec = {"name": e.name, "status": "error", "error": str(err)}
            _err(f"privpix: error: {err}")
        records.append(rec)
        if not json_ and rec["status"] in ("downloaded", "present"):
            pin = "pinned" if rec["pinned"] else "not pinned"
            typer.echo(
                f"{e.name}: {rec['status']} {rec['path']} (sha256 {rec['sha256']}, {rec['digest']}, {pin})"
            )
        elif not json_ and rec["status"] == "import-only":
            typer.echo(f"{e.name}: import-only - {rec['hint']}")
    if json_:
        _echo_json(records)
    if failed:
        raise typer.Exit(1)


@app.command("verify")
def verify_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Weights names \\[default: every present checkpoint].", show_default=False),
    ] = None,
    json_: JsonOpt = False,
    weights_dir: WeightsDirOpt = None,
) -> None:
    """Re-hash local checkpoints and compare with the pinned (or first recorded) sha256.

    Exit code 1 when a file does not match or a named checkpoint is missing.

    Examples:
      privpix weights verify
      privpix weights verify big-lama --json
    """
    from ..weights import get_weights, list_weights, verify_local

    try:
        entries = [get_weights(n) for n in names] if names else list_weights()
    except PrivpixError as err:
        _fail(err)
    results, failed = [], 0
    for e in entries:
        pin = {
            "revision": e.revision if e.source_kind == "hub" else None,
            "revision_pinned": e.revision_pinned,
            "sha256_pinned": bool(e.sha256),
            "pin": e.pin_text,
        }
        for r in verify_local(e, weights_dir):
            r = {**r, **pin}
            results.append(r)
            if r["status"] == "missing" and not names:
                if not json_:
                    typer.echo(f"{e.name}: not present ({e.pin_text})")
                continue
            if r["status"] in ("missing", "mismatch"):
                failed += 1
                _err(f"privpix: error: {r.get('error') or e.name + ' is missing: ' + r['hint']}")
            elif not json_:
                expected = f" (expected {r['expected']})" if r.get("expected") else ""
                typer.echo(
                    f"{e.name}: {r['status']} sha256 {r['sha256']}{expected} {r['path']} ({e.pin_text})"
                )
    if json_:
        _echo_json(results)
    if failed:
        raise typer.Exit(1)


@app.command("import")
def import_cmd(
    name: Annotated[str, typer.Argument(help="Weights name the file is a copy of.")],
    file: Annotated[Path, typer.Argument(help="Checkpoint file you already have.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a different file already in the weights dir.")
    ] = False,
    json_: JsonOpt = False,
    weights_dir: WeightsDirOpt = None,
) -> None:
    """Check a checkpoint you have and store it where resolution finds it (the weights dir).

    The file must load into the entry's architecture (strictly, through its key filter) and match
    the pinned sha256 when there is one; otherwise nothing is stored.

    Examples:
      privpix weights import curricularface-ir101 ~/Downloads/CurricularFace_Backbone.pth
      privpix weights import big-lama ./big-lama.pt --json
    """
    from ..weights import import_weights

    try:
        res = import_weights(name, file, weights_dir=weights_dir, force=force)
    except PrivpixError as err:
        _fail(err)
    if json_:
        _echo_json(res)
        return
    checked = (
        f"loads into {res['arch']}"
        if res["checked"] == "architecture"
        else f"format checked ({res['arch'] or 'architecture'} not available)"
    )
    typer.echo(
        f"{res['name']}: {res['status']} {res['path']} ({checked}; sha256 {res['sha256']}, {res['digest']})"
    )


@app.command("path")
def path_cmd(
    name: Annotated[str, typer.Argument(help="Weights name.")],
    json_: JsonOpt = False,
    weights_dir: WeightsDirOpt = None,
) -> None:
    """Print the local file resolution would use (never downloads); exit 1 when there is none.

    Examples:
      privpix weights path big-lama
    """
    from ..weights import get_weights, locate
    from ..weights.resolve import missing_error, weights_dir_path

    try:
        e = get_weights(name)
        loc = locate(e, weights_dir)
        if loc is None:
            raise missing_error(
                e, f"no copy is in {weights_dir_path(e, weights_dir).parent} or the Hugging Face cache"
            )
    except PrivpixError as err:
        _fail(err)
    if json_:
        _echo_json({"name": e.name, "path": str(loc.path), "where": loc.where})
    else:
        typer.echo(str(loc.path))


@app.command("info")
def info_cmd(
    name: Annotated[str, typer.Argument(help="Weights name.")],
    json_: JsonOpt = False,
    weights_dir: WeightsDirOpt = None,
) -> None:
    """Show everything known about one checkpoint: source, digest, format, licence, local copies.

    Examples:
      privpix weights info stylegan2-ffhq
    """
    from dataclasses import asdict

    from ..weights import get_weights, local_status
    from ..weights.resolve import fetch_hint, weights_dir_path

    try:
        e = get_weights(name)
        st = local_status(e, weights_dir)
    except PrivpixError as err:
        _fail(err)
    info = {
        **asdict(e),
        "used_by": list(e.used_by),
        "alternatives": list(e.alternatives),
        "source_kind": e.source_kind,
        "origin": e.origin,
        "size_text": e.size_text,
        "weights_dir_file": str(weights_dir_path(e, weights_dir)),
        "local": st,
        "get_it": fetch_hint(e),
    }
    if json_:
        _echo_json(info)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, title=e.name)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in (
        "origin", "format", "container", "key_prefix", "size_text", "sha256", "sha256_prefix", "licence",
        "licence_url", "restricted", "arch", "used_by", "alternatives", "paper", "source", "notes",
    ):  # fmt: skip
        value = info[key]
        if isinstance(value, list):
            value = ", ".join(value)
        if value not in ("", None, []):
            table.add_row(key, str(value))
    table.add_row("status", st["status"])
    table.add_row("local file", st["path"] or f"(none; would be {info['weights_dir_file']})")
    if st["status"] == "missing":
        table.add_row("get it", info["get_it"])
    Console().print(table)


__all__ = ["app"]
