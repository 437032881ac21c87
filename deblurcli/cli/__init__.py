"""The ``deblurcli`` command line: argument plumbing over the library, nothing more."""
