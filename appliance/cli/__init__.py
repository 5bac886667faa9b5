"""The `appliance` command line: thin Typer commands over the service layer."""
