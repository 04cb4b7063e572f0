//! The MLLP codec on arbitrary bytes split at arbitrary points: no panic, bounded buffer, every
//! frame within the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use v2fhir::sources::mllp::{Frame, MllpCodec};

const LIMIT: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the read size, the rest is the stream.
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut codec = MllpCodec::new(LIMIT);
    let mut buf = BytesMut::new();
    for chunk in stream.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            if let Frame::Message(m) = f {
                assert!(m.len() <= LIMIT);
                assert!(!m.contains(&0x0b) && !m.contains(&0x1c));
            }
        }
        assert!(buf.len() <= LIMIT + 2 + 4096 + 256);
    }
    let _ = codec.decode_eof(&mut buf);
});
