UPDATE meta SET schema_version = 4;
DROP INDEX documents_name_idx;
DROP INDEX documents_type_name_idx;
DROP TABLE documents;
