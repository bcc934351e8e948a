#!/usr/bin/env python3
"""Command line for review_nlp: prepare channels, train, deploy, predict, compare, demo.

Run `python launch.py --help` for the subcommands; each option's help states its default.
"""

import sys

from review_nlp.launcher.cli import main

if __name__ == "__main__":
    sys.exit(main())
