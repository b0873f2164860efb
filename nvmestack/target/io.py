"""NVM command set handlers."""
