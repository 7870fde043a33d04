-- Status-page subscribers become one more kind of destination of the notification
-- dispatcher: a subscriber's notice is a delivery (claimed with compare-and-set, retried with
-- the dispatcher's backoff, logged in deliveries), and the second outbox beside it
-- (status_page_notices with its own claim, status_page_cursor with its own fan-out) goes.

-- A delivery goes to a channel or to a subscriber. Kinds of a subscriber's delivery:
-- 'state' (a component's state changed), 'post' (an incident post or update), 'confirm' (the
-- confirmation mail of an email subscription). `payload` holds what the notice says.
ALTER TABLE deliveries ALTER COLUMN channel_id DROP NOT NULL;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS subscriber_id bigint
    REFERENCES status_page_subscribers (id) ON DELETE CASCADE;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS payload jsonb;
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_destination_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_destination_check
    CHECK (num_nonnulls(channel_id, subscriber_id) = 1);
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_kind_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_kind_check CHECK (kind IN
    ('event', 'reminder', 'escalation', 'test', 'state', 'post', 'confirm'));
-- The subscribers' counterpart of UNIQUE (event_id, channel_id, kind, seq): any number of
-- controllers can fan out one state event, one notice per subscriber comes out.
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_subscriber_event
    ON deliveries (event_id, subscriber_id, kind, seq) WHERE subscriber_id IS NOT NULL;
-- The confirmation-mail resend throttle looks up a subscriber's recent confirmations.
CREATE INDEX IF NOT EXISTS deliveries_subscriber
    ON deliveries (subscriber_id, kind, created_at) WHERE subscriber_id IS NOT NULL;

-- Every notice moves over, sent ones too: they are the delivery log, and a state notice
-- keeps its event id so the dispatcher's fan-out of an event the old fan-out had already
-- reached finds it there (unique key above) instead of sending it again.
INSERT INTO deliveries (event_id, subscriber_id, kind, status, attempts, next_attempt_at,
                        locked_until, last_error, payload, created_at, updated_at, delivered_at)
SELECT CASE WHEN n.kind = 'state' THEN (n.payload->>'event_id')::bigint END,
       n.subscriber_id,
       n.kind,
       CASE n.state WHEN 'sent' THEN 'delivered' WHEN 'failed' THEN 'dead'
            WHEN 'sending' THEN 'sending'
            ELSE CASE WHEN n.attempts > 0 THEN 'failed' ELSE 'pending' END END,
       n.attempts,
       n.next_at,
       coalesce(n.claimed_until, now()),
       n.last_error,
       n.payload,
       n.created_at,
       coalesce(n.sent_at, n.created_at),
       n.sent_at
FROM status_page_notices n
WHERE n.kind IN ('state', 'post', 'confirm')
ORDER BY n.id
ON CONFLICT DO NOTHING;

-- State events that the dispatcher's fan-out has passed but the old one had not reached:
-- nobody would fan them out any more, so their notices are written here, as the old
-- fan-out would have written them.
INSERT INTO deliveries (event_id, subscriber_id, kind, status, next_attempt_at, payload)
SELECT e.id, s.id, 'state', 'pending', now(),
       jsonb_build_object(
           'component', c.display_name,
           'state', CASE e.kind WHEN 'monitor.down' THEN 'outage' WHEN 'monitor.up' THEN 'operational'
                    ELSE 'degraded' END,
           'event_id', e.id,
           'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
FROM events e
JOIN status_page_components c ON c.monitor_id = e.monitor_id
JOIN status_page_subscribers s ON s.page_id = c.page_id AND s.confirmed_at IS NOT NULL
WHERE e.kind IN ('monitor.down', 'monitor.up', 'monitor.degraded')
  AND e.id > (SELECT last_event_id FROM status_page_cursor WHERE name = 'subscribers')
  AND e.id <= (SELECT last_event_id FROM dispatcher_cursor WHERE name = 'fanout')
ORDER BY e.id, s.id
ON CONFLICT DO NOTHING;

DROP TABLE status_page_notices;
DROP TABLE status_page_cursor;
