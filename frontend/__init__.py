"""The dashboard: static HTML/JS/CSS served by the API as package data (no build step)."""
