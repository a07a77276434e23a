-- Forget the version: the schema holds no queue any more.
DROP TABLE schema_version
