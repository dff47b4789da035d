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


def _plain_help_types() -> None:
    """Recent Typer prints a type placeholder for every parameter (``--json <bool>``,
    ``inputs... <list[str]>``); flags take no value and arguments are named by their metavar, so
    show the type only for options that take a value (``<path>``, ``<int range>``, ...)."""
    from typer import core

    opt = getattr(core, "TyperOption", None)
    arg = getattr(core, "TyperArgument", None)
    if opt is None or not hasattr(opt, "display_type_rich"):  # pragma: no cover - other Typer versions
        return
    shown = opt.display_type_rich

    def display_type_rich(self, ctx):  # type: ignore[no-untyped-def]
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    opt.display_type_rich = display_type_rich
    if arg is not None and hasattr(arg, "display_type_rich"):
        arg.display_type_rich = lambda self, ctx: None


_plain_help_types()


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
    from . import stylize_cmd

    app.command("stylize")(stylize_cmd.stylize)
    from . import perturb_cmd

    app.command("perturb")(perturb_cmd.perturb)
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

        app.add_typer(
            train_app,
            name="train",
            help="Train learned methods: ERASER, UAP perturbations, task masks, Private-Encoder.",
        )
    except ImportError:
        pass


_register()


def main() -> None:
    """Console entry point. Commands map their own errors (cli_errors); this catches the rest.

    Usage errors (bad option values, unknown options) are one line on stderr and exit 2, like the
    commands' own checks, instead of Click's boxed usage block.
    """
    try:  # recent Typer vendors Click as typer._click; older ones use click itself
        from typer import _click as click  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover
        import click  # type: ignore[no-redef]

    from .output import DEBUG, Output

    try:
        rv = app(standalone_mode=False)
    except click.exceptions.UsageError as e:
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        Output().error(f"{e.format_message()}{where}")
        sys.exit(2)
    except click.exceptions.ClickException as e:
        Output().error(e.format_message())
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, getattr(click.exceptions, "Abort", typer.Abort), typer.Abort):
        Output().error("interrupted")
        sys.exit(130)
    except Exception as e:  # the unexpected: one line, unless PRIVPIX_DEBUG=1
        if DEBUG:
            raise
        Output().error(f"internal error: {type(e).__name__}: {e} (set PRIVPIX_DEBUG=1 for a traceback)")
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
