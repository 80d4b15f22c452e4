"""Built-in datasets (synthetic, from shipped templates) and checks of raw data."""
