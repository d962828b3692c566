"""hrtemnet: find and classify atomic columns in HRTEM focal series of 2D materials."""

__version__ = "0.1.0"
