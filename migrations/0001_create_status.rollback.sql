DROP INDEX status_version_idx;
DROP TABLE status;
