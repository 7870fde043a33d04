-- Why a delivery is 'held': NULL for the monitor's alert_threshold (0010), 'parent' while the
-- monitor's parent has not yet given a verdict on the time the child started failing. A
-- child whose round closes before its parent's would otherwise page while the parent is
-- still confirming its own outage; the dispatcher releases such a delivery once the parent
-- is seen passing after the child's failure began, and cancels it (suppressing the child's
-- incident) once the parent is down (dispatcher.release_parent_held).
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS hold_reason text;
