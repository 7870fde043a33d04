-- Flap detection as Nagios does it: the weighted percentage of state changes over a
-- monitor's last 21 round verdicts, flapping above 30 % until it falls below 25 %
-- (dispatcher.flap_percent). One row per monitor the dispatcher has judged; `flapping`
-- changes with compare-and-set and each change writes a monitor.flapping event.
CREATE TABLE IF NOT EXISTS monitor_flaps (
    monitor_id bigint PRIMARY KEY REFERENCES monitors (id) ON DELETE CASCADE,
    flapping   boolean NOT NULL DEFAULT false,
    percent    double precision NOT NULL DEFAULT 0,
    changed_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS monitor_flaps_flapping ON monitor_flaps (monitor_id) WHERE flapping;
