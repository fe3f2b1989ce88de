"""One module per CLI subcommand. Each exposes `register(subparsers)`, which adds its parser and
sets `func` to a function `(args) -> int`. Commands are thin: parse, call one library function, print."""
