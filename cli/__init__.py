"""The `synpro` command line (Typer)."""
