//! File digests as PROTOCOL.md §4.4 defines them: XXH3-128 (seed 0, big-endian canonical
//! form) through `xxhash-rust`, BLAKE3-256 (unkeyed) through `blake3`. Both are the reference
//! crates of their algorithms, streaming and SIMD-accelerated.

use rdmaft_protocol::{Digest, DigestKind};

/// A digest being computed over a file's bytes, in order.
///
/// The streaming state is made only when a file's bytes come in more than one piece: a small
/// file's single chunk is hashed in one call ([`update_last`](Self::update_last)), without
/// allocating and setting up a state for it (which showed in the small-files profile).
pub(crate) enum Digester {
    None,
    /// XXH3-128 over the bytes so far (`None`: none yet).
    Xxh3(Option<Box<xxhash_rust::xxh3::Xxh3>>),
    /// BLAKE3 over the bytes so far (`None`: none yet).
    Blake3(Option<Box<blake3::Hasher>>),
    /// The digest of all the bytes, which came in one piece.
    Whole(Digest),
    /// Bytes came after all of them had: a caller's mistake, which must not pass for a
    /// digest (it finishes as [`Digest::NONE`], which matches no agreed kind).
    Spoiled,
}

impl Digester {
    pub(crate) fn new(kind: DigestKind) -> Self {
        match kind {
            DigestKind::None => Digester::None,
            DigestKind::Xxh3_128 => Digester::Xxh3(None),
            // spec: [digest.exact]
            DigestKind::Blake3 => Digester::Blake3(None),
        }
    }

    /// The kind being computed.
    pub(crate) fn kind(&self) -> DigestKind {
        match self {
            Digester::None | Digester::Spoiled => DigestKind::None,
            Digester::Xxh3(_) => DigestKind::Xxh3_128,
            Digester::Blake3(_) => DigestKind::Blake3,
            Digester::Whole(d) => d.kind,
        }
    }

    /// Adds the first `len` bytes of `file`, read back from it in pieces of at most 1 MiB:
    /// a resumed file's digest also covers the part that was not sent this time.
    pub(crate) fn update_from_file(
        &mut self,
        file: &std::fs::File,
        len: u64,
    ) -> std::io::Result<()> {
        self.update_from_range(file, 0, len)
    }

    /// Adds `len` bytes of `file` from `start` (a file part's resumed prefix).
    pub(crate) fn update_from_range(
        &mut self,
        file: &std::fs::File,
        start: u64,
        len: u64,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        let mut at = 0u64;
        while at < len {
            let n = ((len - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], start + at)?;
            self.update(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Digester::None | Digester::Spoiled => {}
            Digester::Xxh3(h) => h
                .get_or_insert_with(|| Box::new(xxhash_rust::xxh3::Xxh3::new()))
                .update(bytes),
            Digester::Blake3(h) => {
                h.get_or_insert_with(|| Box::new(blake3::Hasher::new()))
                    .update(bytes);
            }
            Digester::Whole(_) => *self = Digester::Spoiled,
        }
    }

    /// Adds the last of the bytes: when they are all of them (none came before), hashed in
    /// one call.
    pub(crate) fn update_last(&mut self, bytes: &[u8]) {
        match self {
            Digester::Xxh3(None) | Digester::Blake3(None) => {
                *self = one_call(self.kind(), bytes).map_or(Digester::Spoiled, Digester::Whole);
            }
            _ => self.update(bytes),
        }
    }

    /// The digest of everything given so far.
    pub(crate) fn finish(&self) -> Digest {
        let digest = match self {
            Digester::None | Digester::Spoiled => return Digest::NONE,
            Digester::Whole(d) => return *d,
            Digester::Xxh3(None) | Digester::Blake3(None) => one_call(self.kind(), &[]),
            // spec: [digest.exact]
            Digester::Xxh3(Some(h)) => {
                Digest::new(DigestKind::Xxh3_128, &h.digest128().to_be_bytes())
            }
            Digester::Blake3(Some(h)) => Digest::new(DigestKind::Blake3, h.finalize().as_bytes()),
        };
        // The lengths match the kinds by construction.
        digest.unwrap_or(Digest::NONE)
    }
}

/// `bytes` hashed by `kind` in one call, without a streaming state (`None` for no digest).
fn one_call(kind: DigestKind, bytes: &[u8]) -> Option<Digest> {
    match kind {
        DigestKind::Xxh3_128 => Digest::new(
            DigestKind::Xxh3_128,
            &xxhash_rust::xxh3::xxh3_128(bytes).to_be_bytes(),
        ),
        DigestKind::Blake3 => Digest::new(DigestKind::Blake3, blake3::hash(bytes).as_bytes()),
        _ => None,
    }
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Digester::None => "Digester::None",
            Digester::Xxh3(_) => "Digester::Xxh3",
            Digester::Blake3(_) => "Digester::Blake3",
            Digester::Whole(_) => "Digester::Whole",
            Digester::Spoiled => "Digester::Spoiled",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &Digest) -> String {
        d.value().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn digest(kind: DigestKind, parts: &[&[u8]]) -> Digest {
        let mut d = Digester::new(kind);
        for p in parts {
            d.update(p);
        }
        d.finish()
    }

    /// The test vectors of PROTOCOL.md §4.4.
    #[test]
    // spec-test: [digest.exact]
    fn protocol_test_vectors() {
        let x = DigestKind::Xxh3_128;
        assert_eq!(hex(&digest(x, &[])), "99aa06d3014798d86001c324468d497f");
        assert_eq!(
            hex(&digest(x, &[b"rdmaft"])),
            "dff67004b5131cf54b3756e84e336e41"
        );
        let b = DigestKind::Blake3;
        assert_eq!(
            hex(&digest(b, &[])),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            hex(&digest(b, &[b"rdmaft"])),
            "6147cc7a57fc4da452de2dba87b6f9451152f8dffc1d4fdf54612917bd9d173b"
        );
        assert_eq!(digest(DigestKind::None, &[b"x"]), Digest::NONE);
    }

    #[test]
    // spec-test: [digest.exact]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31) as u8).collect();
        for kind in [DigestKind::Xxh3_128, DigestKind::Blake3] {
            let whole = digest(kind, &[&data]);
            let parts = digest(kind, &[&data[..1], &data[1..4096], &data[4096..]]);
            assert_eq!(whole, parts, "{kind:?}");
            // The last piece: in one call when it is all of it, streamed after others.
            let mut last = Digester::new(kind);
            last.update_last(&data);
            assert!(matches!(last, Digester::Whole(_)), "{kind:?}");
            assert_eq!(last.finish(), whole, "{kind:?}");
            assert_eq!(last.kind(), kind);
            let mut after = Digester::new(kind);
            after.update(&data[..4096]);
            after.update_last(&data[4096..]);
            assert_eq!(after.finish(), whole, "{kind:?}");
            // Nothing given: the digest of no bytes.
            assert_eq!(
                Digester::new(kind).finish(),
                digest(kind, &[b""]),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn bytes_after_the_last_spoil_the_digest() {
        for kind in [DigestKind::Xxh3_128, DigestKind::Blake3] {
            let mut d = Digester::new(kind);
            d.update_last(b"all of it");
            d.update(b"and more");
            assert_eq!(d.kind(), DigestKind::None);
            assert_eq!(d.finish(), Digest::NONE);
        }
    }
}
