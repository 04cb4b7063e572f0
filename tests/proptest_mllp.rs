//! Property tests of the MLLP codec: however the bytes are split into reads and whatever noise
//! sits between frames, the decoder yields exactly the frames sent, in order; arbitrary bytes never
//! panic and never grow the buffer past the frame limit.

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use v2fhir::sources::mllp::{Frame, MllpCodec};

const LIMIT: usize = 4096;

/// Frame payloads: any bytes except the start and end characters.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no VT/FS", |b| *b != 0x0b && *b != 0x1c),
        0..600,
    )
}

/// Noise between frames: anything but VT (a VT would start a frame).
fn noise() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>().prop_filter("no VT", |b| *b != 0x0b), 0..20)
}

fn decode_in_chunks(codec: &mut MllpCodec, bytes: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    for p in points {
        if p < pos {
            continue;
        }
        buf.extend_from_slice(&bytes[pos..p]);
        pos = p;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(e) => panic!("decode error: {e}"),
            }
        }
        assert!(
            buf.len() <= LIMIT + 2 + 4096,
            "buffer grew to {}",
            buf.len()
        );
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn frames_survive_any_split_and_noise(
        frames in proptest::collection::vec((noise(), payload()), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut wire = Vec::new();
        let mut enc = MllpCodec::new(LIMIT);
        for (n, p) in &frames {
            wire.extend_from_slice(n);
            let mut b = BytesMut::new();
            enc.encode(p.as_slice(), &mut b).unwrap_or(());
            wire.extend_from_slice(&b);
        }
        let mut codec = MllpCodec::new(LIMIT);
        let got = decode_in_chunks(&mut codec, &wire, &cuts);
        let want: Vec<Frame> = frames
            .iter()
            .map(|(_, p)| Frame::Message(bytes::Bytes::copy_from_slice(p)))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut codec = MllpCodec::new(LIMIT);
        for f in decode_in_chunks(&mut codec, &data, &cuts) {
            match f {
                Frame::Message(m) => prop_assert!(m.len() <= LIMIT),
                Frame::Oversized { head, .. } | Frame::Unterminated { head, .. } => {
                    prop_assert!(head.len() <= 4096)
                }
            }
        }
        let mut rest = BytesMut::new();
        let _ = codec.decode_eof(&mut rest);
    }

    #[test]
    fn oversized_frames_are_reported_and_the_next_frame_survives(
        big in 1usize..30_000,
        next in payload(),
    ) {
        let mut wire = vec![0x0b];
        wire.extend(std::iter::repeat_n(b'x', LIMIT + big));
        wire.extend_from_slice(&[0x1c, 0x0d, 0x0b]);
        wire.extend_from_slice(&next);
        wire.extend_from_slice(&[0x1c, 0x0d]);
        let mut codec = MllpCodec::new(LIMIT);
        let got = decode_in_chunks(&mut codec, &wire, &[1000, 7000, 20_000]);
        prop_assert_eq!(got.len(), 2);
        let is_oversized = matches!(&got[0], Frame::Oversized { len, .. } if *len == LIMIT + big);
        prop_assert!(is_oversized, "{:?}", got[0]);
        prop_assert_eq!(&got[1], &Frame::Message(bytes::Bytes::copy_from_slice(&next)));
    }
}
