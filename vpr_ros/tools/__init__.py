"""Command-line tools (console scripts): each module has `main(argv) -> int`."""
