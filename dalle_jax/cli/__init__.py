"""The command line behind `run.py`: `main` dispatches to one module a generation."""
