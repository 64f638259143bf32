-- Versions of the rules applied through the API (`commscanctl policy|catalog|registers apply`),
-- append-only: a rollback stores the old text again as a new version.
CREATE TABLE rules_versions (
    kind         text NOT NULL CHECK (kind IN ('catalog', 'registers', 'policy')),
    -- The organisation a policy is for; '' for the default policy, the catalog and registers.
    organisation text NOT NULL DEFAULT '',
    version      bigint NOT NULL CHECK (version > 0),
    text         text NOT NULL,
    sha256       text NOT NULL,
    author       text NOT NULL,
    at           timestamptz NOT NULL,
    note         text NOT NULL,
    PRIMARY KEY (kind, organisation, version)
);

-- Who changed which rules when (the text is in rules_versions).
CREATE VIEW bi_rules_changes AS
SELECT kind, NULLIF(organisation, '') AS organisation, version, at, author, note, sha256
FROM rules_versions;
