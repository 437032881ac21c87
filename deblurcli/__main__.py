"""``python -m deblurcli``: the same entry point as the ``deblurcli`` console script."""

from deblurcli.cli.app import main

if __name__ == "__main__":
    main()
