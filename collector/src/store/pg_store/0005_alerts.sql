-- The alert outbox: per sink, alerts in the order they were enqueued, removed once delivered
-- (or dropped). Written in the transaction of the device write whose verdict change they tell.
CREATE TABLE alert_outbox (
    position    bigserial PRIMARY KEY,
    sink        text NOT NULL,
    event_id    text NOT NULL,
    enqueued_at timestamptz NOT NULL,
    payload     text NOT NULL
);
CREATE INDEX alert_outbox_by_sink ON alert_outbox (sink, position);

-- Alerts about a lasting state raised once across every collector (an enterprise stale since
-- a given push): the mark holds the state the alert was raised for.
CREATE TABLE alert_marks (
    mark  text PRIMARY KEY,
    value text NOT NULL
);
