"""Prepare a dataset directory for training: ``data_prep/cli.py`` (see there; docs/data_prep.md).

python launchers/prepare.py source=<name> [source.path=...] output_dir=<dir> [key=value ...]
python launchers/prepare.py --validate <dir>
"""

from data_prep.cli import main

if __name__ == "__main__":
    main()
