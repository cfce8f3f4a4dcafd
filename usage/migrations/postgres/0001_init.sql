-- Minutes are stored as integer micro-minutes (minutes x 1e6) so that sums are
-- exact. Times are timestamptz, written from the gateway's clock.

-- One row per user and calendar month (UTC): what settled deliveries billed and
-- what open deliveries hold. Reservations change it only through a conditional
-- UPDATE (used + reserved + delta <= limit), which PostgreSQL evaluates under the
-- row's lock, so replicas sharing the ledger can never overspend.
CREATE TABLE quota_periods (
    user_id        TEXT   NOT NULL,
    period         TEXT   NOT NULL,
    used_micro     BIGINT NOT NULL DEFAULT 0,
    reserved_micro BIGINT NOT NULL DEFAULT 0 CHECK (reserved_micro >= 0),
    PRIMARY KEY (user_id, period)
);

-- A download groups the deliveries that fetch one copy of a file: the request that
-- started it and the ranged requests that continued it.
CREATE TABLE downloads (
    id         TEXT        PRIMARY KEY,
    user_id    TEXT        NOT NULL,
    video      TEXT        NOT NULL,
    type       TEXT        NOT NULL,
    session    TEXT        NOT NULL DEFAULT '',
    mode       TEXT        NOT NULL,
    period     TEXT        NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    last_at    TIMESTAMPTZ NOT NULL,
    -- the delivery that carried the once-per-download charge, if any
    billed_by  TEXT
);

CREATE INDEX downloads_resume ON downloads (user_id, video, type, session, last_at);

-- One row per response body. Open while settled_at IS NULL: reserved_micro is then
-- held in quota_periods, bytes/minutes_micro are the last checkpoint, and
-- checkpoint_at is the last time the metering process wrote the row (reservation,
-- checkpoint or heartbeat). An open row whose checkpoint_at is older than the
-- ledger's stale threshold belongs to a process that is gone; Recover settles it.
CREATE TABLE deliveries (
    id               TEXT             PRIMARY KEY,
    download_id      TEXT             NOT NULL REFERENCES downloads (id),
    started_download BOOLEAN          NOT NULL DEFAULT FALSE,
    user_id          TEXT             NOT NULL,
    plan             TEXT             NOT NULL DEFAULT '',
    video            TEXT             NOT NULL,
    type             TEXT             NOT NULL,
    session          TEXT             NOT NULL DEFAULT '',
    mode             TEXT             NOT NULL,
    period           TEXT             NOT NULL,
    duration         DOUBLE PRECISION NOT NULL,
    range_start      BIGINT           NOT NULL DEFAULT -1,
    range_end        BIGINT           NOT NULL DEFAULT -1,
    country          TEXT             NOT NULL DEFAULT '',
    client_ip        TEXT             NOT NULL DEFAULT '',
    request_id       TEXT             NOT NULL DEFAULT '',
    limit_micro      BIGINT           NOT NULL,          -- -1: unlimited
    reserved_micro   BIGINT           NOT NULL,
    once_micro       BIGINT           NOT NULL DEFAULT 0,
    bytes            BIGINT           NOT NULL DEFAULT 0,
    minutes_micro    BIGINT           NOT NULL DEFAULT 0,
    total_size       BIGINT           NOT NULL DEFAULT 0,
    status           TEXT             NOT NULL DEFAULT 'open',
    reason           TEXT             NOT NULL DEFAULT '',
    opened_at        TIMESTAMPTZ      NOT NULL,
    checkpoint_at    TIMESTAMPTZ      NOT NULL,
    settled_at       TIMESTAMPTZ
);

CREATE INDEX deliveries_open ON deliveries (checkpoint_at) WHERE settled_at IS NULL;
CREATE INDEX deliveries_period ON deliveries (period, user_id);
CREATE INDEX deliveries_download ON deliveries (download_id);
