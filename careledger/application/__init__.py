"""The application service: the one writer of the ledger (``ledger``), the mapping of wire
interactions to domain ones (``intake``), the loading of program files (``programs``) and the
read-side queries the CLI answers from the event store (``queries``)."""
