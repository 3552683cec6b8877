-- Who sent each event: the gateway's principal (its --auth-file name, or
-- anonymous). NULL for the rows stored before the gateway wrote one.
ALTER TABLE events ADD COLUMN IF NOT EXISTS principal text;
