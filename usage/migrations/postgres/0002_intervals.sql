-- Metering v2: a download owns the byte intervals delivered in it, and the
-- deliveries open in it claim the bytes they may still send; the download row
-- holds the reservation that covers those claims (package billing).
--
-- What the previous schema left open is settled here from its last checkpoint,
-- as a restart would have: its checkpointed minutes are billed and its
-- reservation released. Its rows stay, renamed, for the record.
UPDATE quota_periods SET
    used_micro = used_micro + COALESCE((SELECT SUM(d.minutes_micro) FROM deliveries d
        WHERE d.settled_at IS NULL AND d.user_id = quota_periods.user_id AND d.period = quota_periods.period), 0),
    reserved_micro = reserved_micro - COALESCE((SELECT SUM(d.reserved_micro) FROM deliveries d
        WHERE d.settled_at IS NULL AND d.user_id = quota_periods.user_id AND d.period = quota_periods.period), 0);
UPDATE deliveries SET status = 'recovered', reason = 'settled by the schema upgrade',
    settled_at = now() WHERE settled_at IS NULL;

DROP INDEX IF EXISTS deliveries_open;
DROP INDEX IF EXISTS deliveries_period;
DROP INDEX IF EXISTS deliveries_download;
DROP INDEX IF EXISTS downloads_resume;
ALTER TABLE deliveries RENAME TO deliveries_v1;
ALTER TABLE downloads RENAME TO downloads_v1;

ALTER TABLE quota_periods ADD COLUMN stream_micro BIGINT NOT NULL DEFAULT 0;

-- The download a user's next request of a video and type may join. Every change
-- to a download happens under its key's row, so requests of one download are
-- decided one at a time.
CREATE TABLE download_keys (
    user_id     TEXT NOT NULL,
    video       TEXT NOT NULL,
    type        TEXT NOT NULL,
    download_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, video, type)
);

CREATE TABLE downloads (
    id             TEXT    PRIMARY KEY,
    user_id        TEXT    NOT NULL,
    video          TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    mode           TEXT    NOT NULL,
    period         TEXT    NOT NULL,
    duration       DOUBLE PRECISION NOT NULL,
    full_micro     BIGINT  NOT NULL,
    size           BIGINT  NOT NULL DEFAULT 0,   -- 0: not known yet
    etag           TEXT    NOT NULL DEFAULT '',
    held           TEXT    NOT NULL DEFAULT '',  -- delivered byte intervals, "a-b,c-d"
    sent           BIGINT  NOT NULL DEFAULT 0,   -- bytes delivered, repeats included
    billed_micro   BIGINT  NOT NULL DEFAULT 0,
    reserved_micro BIGINT  NOT NULL DEFAULT 0,   -- held in quota_periods for open claims
    started_at     BIGINT  NOT NULL,
    last_at        BIGINT  NOT NULL
);

-- One row per response body. Open while settled_at IS NULL: it then claims
-- claim_start..claim_end (-1: to the end of a file of unknown size), of which
-- acked bytes have been delivered and billed as of the last checkpoint.
CREATE TABLE deliveries (
    id            TEXT    PRIMARY KEY,
    download_id   TEXT    NOT NULL REFERENCES downloads (id),
    started       BIGINT  NOT NULL DEFAULT 0,   -- it started its download
    user_id       TEXT    NOT NULL,
    plan          TEXT    NOT NULL DEFAULT '',
    video         TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    mode          TEXT    NOT NULL,
    period        TEXT    NOT NULL,
    duration      DOUBLE PRECISION NOT NULL,
    range_text    TEXT    NOT NULL DEFAULT '',
    claim_start   BIGINT  NOT NULL,
    claim_end     BIGINT  NOT NULL,
    limit_micro   BIGINT  NOT NULL,             -- -1: unlimited
    acked         BIGINT  NOT NULL DEFAULT 0,   -- body bytes the client received
    acked_source  TEXT    NOT NULL DEFAULT '',
    written       BIGINT  NOT NULL DEFAULT 0,   -- body bytes written to the client
    stream_bytes  BIGINT  NOT NULL DEFAULT 0,   -- body bytes read from Stream
    minutes_micro BIGINT  NOT NULL DEFAULT 0,   -- billed by this delivery
    stream_micro  BIGINT  NOT NULL DEFAULT 0,   -- what Stream bills for stream_bytes
    country       TEXT    NOT NULL DEFAULT '',
    client_ip     TEXT    NOT NULL DEFAULT '',
    request_id    TEXT    NOT NULL DEFAULT '',
    status        TEXT    NOT NULL DEFAULT 'open',
    reason        TEXT    NOT NULL DEFAULT '',
    opened_at     BIGINT  NOT NULL,
    beat_at       BIGINT  NOT NULL,
    settled_at    BIGINT
);

CREATE INDEX deliveries_v2_open ON deliveries (beat_at) WHERE settled_at IS NULL;
CREATE INDEX deliveries_v2_claims ON deliveries (download_id) WHERE settled_at IS NULL;
CREATE INDEX deliveries_v2_period ON deliveries (period, user_id);
