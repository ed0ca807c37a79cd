"""unet-export: train the seed U-Net, export it for the edge, benchmark it on the device."""

__version__ = "0.1.0"
