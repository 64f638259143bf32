-- Collectors sharing the database, and the reporting stream each device holds, so two agents
-- with one identity are spotted when their copies connect to different collectors.

-- Each collector process writes its row every few seconds; one not seen for a while is gone.
CREATE TABLE cluster_nodes (
    node text PRIMARY KEY,
    seen timestamptz NOT NULL
);

-- A device's open stream (node and conn NULL when none is open) and the takeovers of its
-- stream within the duplicate window, kept across disconnects.
CREATE TABLE live_streams (
    device_id text PRIMARY KEY,
    node      text,
    conn      bigint,
    since     timestamptz,
    takeovers timestamptz[] NOT NULL DEFAULT '{}'
);
