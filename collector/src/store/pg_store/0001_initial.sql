-- commscan collector store, schema version 1.
--
-- Every table keeps the collector's record as `record jsonb` (what the collector decodes, so a
-- new field never needs a migration) beside typed columns extracted from it (what people and
-- BI tools query, and what the indexes use). The views at the end are the documented,
-- read-only surface for BI tools; the tables may change between versions, the views will not
-- without notice.

CREATE TABLE devices (
    device_id     text PRIMARY KEY,
    organisation  text NOT NULL,
    hostname      text NOT NULL,
    platform      text,
    os_version    text NOT NULL,
    agent_version text NOT NULL,
    status        text NOT NULL,
    enrolled_at   timestamptz NOT NULL,
    last_report   timestamptz,
    -- last_report while the device may still go stale (not stale yet), else NULL: the sweep's index.
    stale_watch   timestamptz,
    revoked       boolean NOT NULL,
    record        jsonb NOT NULL
);
CREATE INDEX devices_listing ON devices (organisation, device_id);
CREATE INDEX devices_status ON devices (organisation, status, device_id);
CREATE INDEX devices_platform ON devices (platform, organisation, device_id);
CREATE INDEX devices_stale_watch ON devices (stale_watch) WHERE stale_watch IS NOT NULL;

CREATE TABLE findings (
    device_id text NOT NULL REFERENCES devices ON DELETE CASCADE,
    product   text NOT NULL,
    version   text,
    violating boolean NOT NULL,
    evidence  jsonb NOT NULL,
    PRIMARY KEY (device_id, product)
);
CREATE INDEX findings_product ON findings (product, device_id);

CREATE TABLE history (
    position  bigserial PRIMARY KEY,
    device_id text NOT NULL,
    at        timestamptz NOT NULL,
    kind      text NOT NULL,
    record    jsonb NOT NULL
);
CREATE INDEX history_device ON history (device_id, position);

-- One row per organisation, updated in the transaction of every device write: a summary is
-- one row read, never a scan.
CREATE TABLE org_aggregates (
    organisation text PRIMARY KEY,
    devices      bigint NOT NULL,
    aggregate    jsonb NOT NULL
);

-- The aggregate as it stood at the end of each day (the trend).
CREATE TABLE org_daily (
    organisation text NOT NULL,
    day          date NOT NULL,
    devices      bigint NOT NULL,
    aggregate    jsonb NOT NULL,
    PRIMARY KEY (organisation, day)
);

CREATE TABLE classifications (
    organisation text NOT NULL,
    name         text NOT NULL,
    record       jsonb NOT NULL,
    PRIMARY KEY (organisation, name)
);

-- Secrets by SHA-256 hex only.
CREATE TABLE enrolment_tokens (
    hash         text PRIMARY KEY,
    organisation text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    uses_left    bigint,
    revoked      boolean NOT NULL,
    record       jsonb NOT NULL
);

CREATE TABLE people (
    hash       text PRIMARY KEY,
    name       text NOT NULL,
    expires_at timestamptz,
    revoked    boolean NOT NULL,
    record     jsonb NOT NULL
);

-- Append-only; rows leave only by retention.
CREATE TABLE audit (
    position     bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    organisation text,
    bytes        integer NOT NULL,
    record       jsonb NOT NULL
);

CREATE TABLE federated (
    enterprise   text NOT NULL,
    organisation text NOT NULL,
    generated_at timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    devices      bigint NOT NULL,
    aggregate    jsonb NOT NULL,
    PRIMARY KEY (enterprise, organisation)
);

-- BI views.

-- Compliance per organisation: devices by status.
CREATE VIEW bi_compliance_per_organisation AS
SELECT organisation,
       devices,
       COALESCE((aggregate -> 'by_status' ->> 'compliant')::bigint, 0)    AS compliant,
       COALESCE((aggregate -> 'by_status' ->> 'noncompliant')::bigint, 0) AS noncompliant,
       COALESCE((aggregate -> 'by_status' ->> 'waived')::bigint, 0)       AS waived,
       COALESCE((aggregate -> 'by_status' ->> 'stale')::bigint, 0)        AS stale,
       COALESCE((aggregate -> 'by_status' ->> 'unknown')::bigint, 0)      AS unknown
FROM org_aggregates;

-- Devices per product and organisation, and how many of them violate the policy.
CREATE VIEW bi_devices_per_product AS
SELECT d.organisation, f.product,
       count(*) AS devices,
       count(*) FILTER (WHERE f.violating) AS violating
FROM findings f JOIN devices d USING (device_id)
GROUP BY d.organisation, f.product;

-- One row per device, without the JSON.
CREATE VIEW bi_devices AS
SELECT device_id, organisation, hostname, platform, os_version, agent_version, status,
       enrolled_at, last_report, revoked
FROM devices;

-- The daily trend per organisation.
CREATE VIEW bi_daily_compliance AS
SELECT organisation, day, devices,
       COALESCE((aggregate -> 'by_status' ->> 'compliant')::bigint, 0)    AS compliant,
       COALESCE((aggregate -> 'by_status' ->> 'noncompliant')::bigint, 0) AS noncompliant,
       COALESCE((aggregate -> 'by_status' ->> 'stale')::bigint, 0)        AS stale
FROM org_daily;
