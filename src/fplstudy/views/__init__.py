"""Views: style, figures, the plan picture, the teaching helpers."""
