"""``python -m mae_core.launch DOMAIN COMMAND ...``: what ``--nproc N`` runs under torch's elastic launcher."""
import importlib
import sys


def main() -> int:
    domain, argv = sys.argv[1], sys.argv[2:]
    module = "mae_core.cli" if domain == "core" else f"mae_{domain}.cli"
    return importlib.import_module(module).main(argv)


if __name__ == "__main__":
    sys.exit(main())
