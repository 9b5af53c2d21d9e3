"""The `synpro` command line: importing the command modules registers their commands on the app."""

from cli import analysis, results, run, score, ui  # noqa: F401  (registration)
from cli.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
