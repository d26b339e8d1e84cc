"""The knowledge base (知识库): articles owned by the responsible unit and approved by the
centre, their immutable version history, and Chinese full-text search over the published
versions (issue 18)."""
