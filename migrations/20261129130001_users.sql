-- People: one row per user who has connected to the tenant, kept from their token's claims
-- (`sub`, `name`, optionally `email`) on Hello and RefreshToken. Members, assignees and the
-- activity feed show these names; ListUsers lists them. Not part of the change log: names
-- are looked up when read.
CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL CHECK (length(name) <= 200),
    email         TEXT    CHECK (email IS NULL OR length(email) BETWEEN 3 AND 320),
    first_seen_at INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
