"""The application: CLI, runtime (composition root), Textual app, headless runner."""
