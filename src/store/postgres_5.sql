-- The conversion output, LZ4-compressed by the gateway (src/store/packed.rs). New rows leave
-- `output` NULL; rows written before keep their text there. Already compressed: stored as is.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS output_z BYTEA;
ALTER TABLE messages ALTER COLUMN output_z SET STORAGE EXTERNAL;
