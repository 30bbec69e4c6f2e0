"""The executable's entry point (PyInstaller runs this file as ``__main__``)."""

from rancherd.cli import main

main()
