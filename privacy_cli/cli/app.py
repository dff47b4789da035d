"""Root of the ``privpix`` CLI: registers the commands; ``main()`` maps errors to one line + exit code."""

from __future__ import annotations

import sys

import typer

from .. import __version__

app = typer.Typer(
    name="privpix",
    help="Remove privacy-sensitive content from photos: detect faces and personal text, then blur, pixelate, "
    "mask or erase them; strip metadata; measure how much privacy a method buys.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"privpix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """privpix: privacy for photos."""


def _register() -> None:
    from . import image_cmds

    app.command("blur")(image_cmds.blur)
    app.command("pixelate")(image_cmds.pixelate)
    app.command("mask")(image_cmds.mask)
    try:
        from . import erase_cmd

        app.command("erase")(erase_cmd.erase)
    except ImportError:
        pass
    from . import deidentify_cmd

    app.command("deidentify")(deidentify_cmd.deidentify)
    from . import detect_cmd

    app.command("detect")(detect_cmd.detect)
    try:
        from . import bench_cmd

        app.command("bench")(bench_cmd.bench)
    except ImportError:
        pass
    try:
        from .weights_cmd import app as weights_app

        app.add_typer(
            weights_app, name="weights", help="List, fetch, verify and import pretrained checkpoints."
        )
    except ImportError:
        pass
    try:
        from .train_cmd import app as train_app

        app.add_typer(train_app, name="train", help="Fine-tune learned methods (ERASER).")
    except ImportError:
        pass


_register()


def main() -> None:
    """Console entry point. Commands map their own errors (cli_errors); this catches the rest."""
    from .output import DEBUG, Output

    try:
        app()
    except KeyboardInterrupt:
        Output().error("interrupted")
        sys.exit(130)
    except Exception as e:  # the unexpected: one line, unless PRIVPIX_DEBUG=1
        if DEBUG:
            raise
        Output().error(f"internal error: {type(e).__name__}: {e} (set PRIVPIX_DEBUG=1 for a traceback)")
        sys.exit(1)
