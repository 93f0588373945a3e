"""Plans: strategy presets, plan resolution, the round program, dynamics, the event schema."""
