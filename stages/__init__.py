"""DVC stage commands: one typer command per stage, each thin (parse, call the library, write)."""
