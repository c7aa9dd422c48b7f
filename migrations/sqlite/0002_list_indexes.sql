-- Lists: the actions of given objects newest first (object / include_related
-- filters).
CREATE INDEX actions_by_object ON actions (object_uuid, id DESC);
