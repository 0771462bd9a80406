"""One module per ``synthloop`` subcommand, each with ``add_parser(sub)`` and ``run(args)``."""
