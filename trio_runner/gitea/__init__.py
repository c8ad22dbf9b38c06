"""gitea package."""
