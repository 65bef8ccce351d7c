"""The interactive path: one click (prompts -> cached embedding -> decoder -> regions), and cache warm-up."""
