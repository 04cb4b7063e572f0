-- The conversion output, LZ4-compressed (src/store/packed.rs). New rows leave `output` NULL;
-- rows written before keep their text there.
ALTER TABLE messages ADD COLUMN output_z BLOB;
