"""The knowledge base's built-in data: the colloquial → official synonym table."""
