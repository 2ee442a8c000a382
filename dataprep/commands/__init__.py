"""One module per subcommand. Each parses options, calls one library function, prints a summary."""
