-- The (user_id, filter_json) index made uploading a filter whose canonical JSON
-- is over ~2.7 kB (incompressible) fail on PostgreSQL: a btree entry cannot be
-- larger than a third of a page. The look-up of an identical filter only scans
-- one user's filters, which the primary key (user_id, filter_id) already finds.
DROP INDEX IF EXISTS user_filters_json;
