"""The ground every package stands on: settings, the database engine, sessions and column
types, the clock, the base errors and the runtime for code outside a request. Imports nothing
of the project."""
