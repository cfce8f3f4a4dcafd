-- Links the operator controls. Grants stay stateless: these tables hold only
-- what a grant cannot carry. Times are Unix seconds, the grants' own precision.

-- How many downloads each use-limited link has started. A row is spent by one
-- conditional upsert (uses < max), in the transaction that starts the
-- download, and is kept until its link expires.
CREATE TABLE link_uses (
    id         TEXT    PRIMARY KEY,
    uses       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX link_uses_expiry ON link_uses (expires_at);

-- Revocation by user, or by user and video (video ''), as a "not before":
-- every link of the user (and video) issued before not_before is refused.
CREATE TABLE link_revocations (
    user_id    TEXT    NOT NULL,
    video      TEXT    NOT NULL DEFAULT '',
    not_before INTEGER NOT NULL,
    PRIMARY KEY (user_id, video)
);

-- Links revoked one by one, kept until they would have expired anyway.
CREATE TABLE revoked_links (
    id         TEXT    PRIMARY KEY,
    until      INTEGER NOT NULL
);
CREATE INDEX revoked_links_until ON revoked_links (until);
