-- Lists: the actions of given objects newest first (object / include_related
-- filters).
CREATE INDEX actions_by_object ON actions (object_uuid, id DESC);
-- Date-window filters (start_date__gte/lte, end_date__gte/lte).
CREATE INDEX actions_by_start ON actions (start_date);
CREATE INDEX actions_by_end ON actions (end_date);
