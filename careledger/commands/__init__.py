"""One module per group of ``careledger`` subcommands; each exposes ``register(subparsers)``."""
