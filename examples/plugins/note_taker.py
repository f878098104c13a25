# AI-Dialer-style plugin (seed 001); only the import line differs from the seed's pattern.
from datetime import datetime

from plughub.compat.dialer import BasePlugin


class NoteTaker(BasePlugin):
    """Keeps short notes during a conversation.

    Context Parameters:
        action (str, optional): "add" (default) or "list".
        text (str, optional): The note to add.
    """

    def __init__(self):
        super().__init__()
        self.notes = []

    def get_description(self):
        return "Adds a note or lists the notes taken so far"

    def execute(self, context):
        action = context.get("action", "add")
        if action == "list":
            return {"notes": self.notes, "count": len(self.notes)}
        is_valid, error = self.validate_context(context, ["text"])
        if not is_valid:
            raise ValueError(error)
        note = {"id": len(self.notes) + 1, "text": context["text"],
                "created": datetime.now().isoformat()}
        self.notes.append(note)
        return {"note": note, "message": f"Note {note['id']} saved"}
