"""``bidflow serve``: the model server from the main CLI.

Its options are the ones ``python -m bidflow.serving`` defines (``bidflow.serving.__main__.parser``):
one definition, so the two entry points cannot drift apart. The global ``bidflow --config`` is the
configuration unless ``--config`` is given after ``serve``.
"""

from __future__ import annotations

import typer


def register_serving_commands(cli: typer.Typer) -> None:
    """Add ``serve`` to the top-level ``bidflow`` app."""
    settings = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
    cli.command("serve", context_settings=settings, add_help_option=False)(serve)


def serve(ctx: typer.Context) -> None:
    """Serve a model kind with KServe's v1 and v2 endpoints (`bidflow serve --help` lists the options)."""
    from bidflow.config import Config, load_config
    from bidflow.serving.__main__ import build, parser, run

    argv = list(ctx.args)
    try:
        args = parser(prog="bidflow serve").parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own message for a bad option
        raise typer.Exit(int(exc.code or 0)) from None
    config: Config = load_config(args.config) if args.config is not None else ctx.obj
    served, options = build(args, config)
    code = run(served, options, argv, config)
    if code:
        raise typer.Exit(code)
