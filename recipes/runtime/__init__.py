"""The generic train / score / explain / data runtime that every recipe plugs into."""
