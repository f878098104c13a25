# AutoGPT-style plugin (seed 000's DatabasePlugin); only the import line differs from the seed.
import sqlite3

from plughub.compat.autogpt import BasePlugin


class DatabasePlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.name = "Database"
        self.description = "Save and list tasks in a SQLite database"
        self.commands = ["save_task", "get_tasks"]
        self.db_path = self.config.get("db_path", "data.db")
        self.init_database()

    def init_database(self):
        with sqlite3.connect(self.db_path) as conn:
            conn.execute("""
                CREATE TABLE IF NOT EXISTS tasks (
                    id INTEGER PRIMARY KEY,
                    name TEXT,
                    status TEXT,
                    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
                )
            """)

    def get_schema(self):
        return {
            "save_task": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "status": {"type": "string"}},
                "required": ["name", "status"],
            },
            "get_tasks": {"type": "object", "properties": {}},
        }

    def handle(self, command):
        if command.name == "save_task":
            return self.save_task(command.args)
        elif command.name == "get_tasks":
            return self.get_tasks()

    def save_task(self, args):
        # Bound parameters: the database never parses user text as SQL.
        with sqlite3.connect(self.db_path) as conn:
            conn.execute(
                "INSERT INTO tasks (name, status) VALUES (?, ?)",
                (args["name"], args["status"])
            )
            return {"status": "success", "message": "Task saved"}

    def get_tasks(self):
        with sqlite3.connect(self.db_path) as conn:
            rows = conn.execute("SELECT id, name, status FROM tasks ORDER BY id").fetchall()
        return {"tasks": [{"id": r[0], "name": r[1], "status": r[2]} for r in rows]}
