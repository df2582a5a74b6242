"""One module per ``fdshpo`` sub-command; each defines ``register(subparsers)``."""
