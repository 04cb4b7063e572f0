//! The conversion output (the FHIR Bundle) as the message log keeps it: LZ4-compressed, in
//! `messages.output_z`. A converted message's Bundle is most of its log row (12 KB of JSON for
//! the golden ADT^A01, 4.4 KB packed), and every page of the row is written to the WAL and
//! copied by the checkpoint. Rows written before this format keep their text in `output`;
//! readers take whichever is there. The raw message is not compressed: it is the record of what
//! was received, and stays readable with any SQL client.
//!
//! Format: one tag byte (`1` = LZ4 block), the text's length as a little-endian `u32`, the block.

/// Tag of an LZ4 block.
const LZ4: u8 = 1;
/// Longest text we unpack (a corrupt length must not allocate without bound).
const MAX: usize = 1 << 30;

/// `text` packed; `None` when it cannot be (over 4 GiB): store it as text then.
pub fn pack(text: &str) -> Option<Vec<u8>> {
    let len = u32::try_from(text.len()).ok()?;
    let mut out = vec![0u8; 5 + lz4_flex::block::get_maximum_output_size(text.len())];
    out[0] = LZ4;
    out[1..5].copy_from_slice(&len.to_le_bytes());
    let n = lz4_flex::block::compress_into(text.as_bytes(), &mut out[5..]).ok()?;
    out.truncate(5 + n);
    Some(out)
}

/// What a log row keeps of a conversion output: the packed bytes (`packed` when the caller
/// packed them already, else packed here), or the text when it cannot be packed. Returns the
/// values of `messages.output` and `messages.output_z`.
pub fn columns<'t>(
    text: Option<&'t str>,
    packed: Option<&[u8]>,
) -> (Option<&'t str>, Option<Vec<u8>>) {
    match (text, packed) {
        (_, Some(p)) => (None, Some(p.to_vec())),
        (Some(t), None) => match pack(t) {
            Some(p) => (None, Some(p)),
            None => (Some(t), None),
        },
        (None, None) => (None, None),
    }
}

/// The conversion output of log row `id`: its text (rows written before the packed column) or
/// its packed bytes, unpacked; otherwise what is wrong with them, naming the row and column.
pub fn output_text(
    id: i64,
    text: Option<String>,
    packed: Option<Vec<u8>>,
) -> Result<Option<String>, String> {
    match (text, packed) {
        (Some(t), _) => Ok(Some(t)),
        (None, Some(p)) => unpack(&p)
            .map(Some)
            .map_err(|e| format!("message {id}: messages.output_z: {e}")),
        (None, None) => Ok(None),
    }
}

/// The text of a packed value, or what is wrong with it.
pub fn unpack(bytes: &[u8]) -> Result<String, String> {
    let (&tag, rest) = bytes.split_first().ok_or("empty packed output")?;
    if tag != LZ4 {
        return Err(format!("packed output has unknown format {tag}"));
    }
    let (len, block) = rest
        .split_first_chunk::<4>()
        .ok_or("packed output shorter than its header")?;
    let len = u32::from_le_bytes(*len) as usize;
    // An LZ4 block expands at most ~255 times: a larger claim is damage, found before allocating.
    if len > MAX || len > block.len().saturating_mul(255).saturating_add(16) {
        return Err(format!(
            "packed output claims {len} bytes from a {}-byte block",
            block.len()
        ));
    }
    let mut out = vec![0u8; len];
    let n = lz4_flex::block::decompress_into(block, &mut out)
        .map_err(|e| format!("packed output does not decompress: {e}"))?;
    if n != len {
        return Err(format!("packed output is {n} bytes, its header says {len}"));
    }
    String::from_utf8(out).map_err(|_| "packed output is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_shrinks_json() {
        let text = r#"{"resourceType":"Bundle","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","id":"1"}},{"fullUrl":"urn:uuid:2","resource":{"resourceType":"Patient","id":"2"}}]}"#.repeat(20);
        let p = pack(&text).expect("packs");
        assert!(p.len() * 4 < text.len(), "{} of {}", p.len(), text.len());
        assert_eq!(unpack(&p).expect("unpacks"), text);
        assert_eq!(unpack(&pack("").expect("packs")).expect("unpacks"), "");
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let p = pack("{\"resourceType\":\"Bundle\",\"type\":\"transaction\"}").expect("packs");
        assert!(unpack(&[]).is_err());
        assert!(unpack(&[2, 0, 0, 0, 0]).is_err());
        assert!(unpack(&p[..3]).is_err());
        assert!(unpack(&[1, 0xff, 0xff, 0xff, 0x7f, 0]).is_err());
        let mut longer = p.clone();
        longer[1] += 1;
        assert!(unpack(&longer).is_err());
        for cut in 5..p.len() {
            let _ = unpack(&p[..cut]);
        }
        for i in 5..p.len() {
            let mut flipped = p.clone();
            flipped[i] ^= 0x55;
            let _ = unpack(&flipped);
        }
    }

    #[test]
    fn a_row_keeps_the_packed_output_and_reads_either_column() {
        let text = "{\"resourceType\":\"Bundle\"}";
        let mine = pack(text).expect("packs");
        // Bytes the caller packed are kept as given; else the text is packed; no text, nothing.
        assert_eq!(columns(Some(text), Some(&mine)), (None, Some(mine.clone())));
        assert_eq!(columns(Some(text), None), (None, Some(mine.clone())));
        assert_eq!(columns(None, None), (None, None));
        // Older rows have text, newer ones bytes.
        assert_eq!(
            output_text(7, Some(text.into()), None),
            Ok(Some(text.into()))
        );
        assert_eq!(output_text(7, None, Some(mine)), Ok(Some(text.into())));
        assert_eq!(output_text(7, None, None), Ok(None));
        let err = output_text(7, None, Some(vec![2, 0, 0, 0, 0])).expect_err("damaged");
        assert!(
            err.starts_with("message 7: messages.output_z: packed output has unknown format"),
            "{err}"
        );
    }
}
