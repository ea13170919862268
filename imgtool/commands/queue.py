"""imgtool queue / enqueue / status: the upload server's Redis protocol (not built yet)."""

import click


@click.command()
def queue():
    """Take jobs from the upload server's Redis queue (not built yet)."""
    raise click.ClickException("imgtool queue is not built yet")


COMMANDS = [queue]
