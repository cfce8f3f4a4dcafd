-- Minutes are stored as integer micro-minutes (minutes x 1e6) so that sums are
-- exact; times are Unix microseconds, UTC.

-- One row per user and calendar month (UTC): what settled deliveries billed and
-- what open deliveries hold. Reservations change it only through a conditional
-- UPDATE (used + reserved + delta <= limit).
CREATE TABLE quota_periods (
    user_id        TEXT    NOT NULL,
    period         TEXT    NOT NULL,
    used_micro     INTEGER NOT NULL DEFAULT 0,
    reserved_micro INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, period)
);

-- A download groups the deliveries that fetch one copy of a file: the request that
-- started it and the ranged requests that continued it.
CREATE TABLE downloads (
    id         TEXT    PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    video      TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    session    TEXT    NOT NULL DEFAULT '',
    mode       TEXT    NOT NULL,
    period     TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    last_at    INTEGER NOT NULL,
    -- the delivery that carried the once-per-download charge, if any
    billed_by  TEXT
);

CREATE INDEX downloads_resume ON downloads (user_id, video, type, session, last_at);

-- One row per response body. Open while settled_at IS NULL: reserved_micro is then
-- held in quota_periods, and bytes/minutes_micro are the last checkpoint.
CREATE TABLE deliveries (
    id              TEXT    PRIMARY KEY,
    download_id     TEXT    NOT NULL REFERENCES downloads (id),
    started_download INTEGER NOT NULL DEFAULT 0,
    user_id         TEXT    NOT NULL,
    plan            TEXT    NOT NULL DEFAULT '',
    video           TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    session         TEXT    NOT NULL DEFAULT '',
    mode            TEXT    NOT NULL,
    period          TEXT    NOT NULL,
    duration        REAL    NOT NULL,
    range_start     INTEGER NOT NULL DEFAULT -1,
    range_end       INTEGER NOT NULL DEFAULT -1,
    country         TEXT    NOT NULL DEFAULT '',
    client_ip       TEXT    NOT NULL DEFAULT '',
    request_id      TEXT    NOT NULL DEFAULT '',
    limit_micro     INTEGER NOT NULL,          -- -1: unlimited
    reserved_micro  INTEGER NOT NULL,
    once_micro      INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    minutes_micro   INTEGER NOT NULL DEFAULT 0,
    total_size      INTEGER NOT NULL DEFAULT 0,
    status          TEXT    NOT NULL DEFAULT 'open',
    reason          TEXT    NOT NULL DEFAULT '',
    opened_at       INTEGER NOT NULL,
    settled_at      INTEGER
);

CREATE INDEX deliveries_open ON deliveries (opened_at) WHERE settled_at IS NULL;
CREATE INDEX deliveries_period ON deliveries (period, user_id);
CREATE INDEX deliveries_download ON deliveries (download_id);
