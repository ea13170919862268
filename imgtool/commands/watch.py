"""imgtool watch DIR: process uploads as they land (not built yet)."""

import click


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def watch(directory):
    """Watch DIRECTORY and process each image that lands in it (not built yet)."""
    raise click.ClickException("imgtool watch is not built yet")


COMMANDS = [watch]
