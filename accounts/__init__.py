"""Users, their roles and credentials. Knows units only as the `unit` table a user's
foreign key names."""
