"""turnout's built-in plugins, one module per backend, registered through the `turnout` entry points."""
