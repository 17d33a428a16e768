"""What every command runs inside: the console, the session log and Ray start-up, crash isolation, the JIT cache, private per-user directories, one-line errors and text display."""
