import click


@click.group()
def cli():
    """unet-export."""
