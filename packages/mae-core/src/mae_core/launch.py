"""``python -m mae_core.launch DOMAIN COMMAND ...``: what ``--nproc N`` runs under torch's elastic launcher.
The domain's package is found through its ``mae.domains`` entry point, like every other registry lookup."""
import sys


def main() -> int:
    from . import registry
    from .cli import run_cli

    domain, argv = sys.argv[1], sys.argv[2:]
    registry.autoload(domain)
    return run_cli(domain, argv)


if __name__ == "__main__":
    sys.exit(main())
