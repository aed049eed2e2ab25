"""Sample connected systems, written the way a vendor would (see README.md here)."""
