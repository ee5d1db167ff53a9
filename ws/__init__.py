"""ws component."""
